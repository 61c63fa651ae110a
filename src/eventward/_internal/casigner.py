"""Who signs for the deployment CA: a 0600 key file, a PKCS#11 token, Vault/OpenBao Transit or AWS KMS.

A :class:`CASigner` exposes the CA's public key and signs the DER "to be signed" part of a
certificate or CRL; where the private key lives is its business. With ``pkcs11``, ``transit`` or
``aws`` the key is generated inside the token or KMS, marked non-extractable, and never reaches
this process: only a SHA-256 digest (or, for AWS, the public TBS bytes) goes out and a signature
comes back.

``cryptography`` can only sign X.509 objects with a private key it holds, so :func:`sign_certificate`
and :func:`sign_crl` use the usual technique for external signers: sign the builder once with a
throwaway key of the same algorithm (ECDSA P-256 with SHA-256) to get the exact
``tbsCertificate``/``tbsCertList`` bytes and the ``signatureAlgorithm`` element, have the real
signer sign the TBS, and assemble ``SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }``.
The result is parsed back and verified against the CA's public key before it is returned: a signer
that answers garbage or signs with another key yields :class:`CASignatureInvalid`, never a
certificate that relying parties would reject (or, worse, that another key could have made).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import SignatureAlgorithmOID

from eventward.errors import CASignatureInvalid, ConfigError, ConflictError, KMSUnavailable

if TYPE_CHECKING:
    from eventward._internal.keys.kms.aws import AwsKmsConfig
    from eventward._internal.keys.kms.pkcs11 import Pkcs11Config
    from eventward._internal.keys.kms.transit import TransitConfig

T = TypeVar("T")

BACKENDS = ("file", "pkcs11", "transit", "aws")
DEFAULT_KEY = "eventward-ca"  # PKCS#11 label / Transit key name / AWS alias suffix
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_P256_HALF = 32
_AWS_RAW_MAX = 4096  # AWS KMS Sign takes RAW messages up to 4096 bytes; DIGEST beyond


class CASigner(Protocol):
    """The CA's signing key, wherever it lives. ``sign`` returns a DER ECDSA-Sig-Value over
    SHA-256 of ``tbs``; callers never trust it without verifying (see :func:`sign_certificate`)."""

    where: str  # for operators and ``eventward threats``: never a secret

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    @property
    def signature_algorithm(self) -> x509.ObjectIdentifier: ...

    def sign(self, tbs: bytes) -> bytes: ...

    def close(self) -> None: ...


def _p256(key: object, where: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"the CA key in {where} is not an ECDSA P-256 key")
    return key


# --- the file key (the default, and today's behaviour) -----------------------------------------


class FileSigner:
    """The CA key as a 0600 PEM file in the home (``certs/ca.key``): whoever copies the home can mint
    certificates. Kept as the default because it needs nothing outside the machine."""

    signature_algorithm = SignatureAlgorithmOID.ECDSA_WITH_SHA256

    def __init__(self, key: ec.EllipticCurvePrivateKey, where: str = "a 0600 file in the home") -> None:
        self._key = key
        self.where = where
        _p256(key.public_key(), where)

    def __repr__(self) -> str:
        return f"FileSigner({self.where!r})"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, tbs: bytes) -> bytes:
        return self._key.sign(tbs, ec.ECDSA(hashes.SHA256()))

    def close(self) -> None:
        pass


# --- PKCS#11 (an HSM, or SoftHSM2) -------------------------------------------------------------


class Pkcs11Signer:
    """An EC P-256 key pair generated in a PKCS#11 token (CKA_LOCAL, sensitive, never extractable).

    CKM_ECDSA signs a SHA-256 digest computed here and returns ``r || s`` (PKCS#11's raw form),
    which is DER-encoded for X.509. The session shares the process's login with the PKCS#11 KMS
    (``token_session``), so a control plane using the same token logs in once."""

    signature_algorithm = SignatureAlgorithmOID.ECDSA_WITH_SHA256

    def __init__(self, config: Any, label: str, public: ec.EllipticCurvePublicKey) -> None:
        self.config, self.label, self._public = config, label, public
        self.where = f"PKCS#11 token {config.token_label!r} (key label {label!r})"

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.where!r})"

    @classmethod
    def open(cls, config: Any, label: str, *, create: bool) -> Pkcs11Signer:
        """The token's key pair labelled ``label``; with ``create``, generated in the token when absent."""

        def find_or_make(session: Any) -> ec.EllipticCurvePublicKey:
            priv = _p11_find(session, label, private=True)
            if priv is None:
                if not create:
                    raise ConfigError(f"PKCS#11 token {config.token_label!r} holds no CA key labelled {label!r}: "
                                      "run 'eventward pki init'")
                _p11_generate(session, label)
                priv = _p11_find(session, label, private=True)
            _p11_check_sealed(priv, config.token_label, label)
            pub = _p11_find(session, label, private=False)
            if pub is None:
                raise ConfigError(f"PKCS#11 token {config.token_label!r} holds no public key labelled {label!r}")
            from pkcs11.util.ec import encode_ec_public_key

            return _p256(serialization.load_der_public_key(encode_ec_public_key(pub)), f"token {config.token_label!r}")

        return cls(config, label, _p11_run(config, "open the CA key", find_or_make))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, tbs: bytes) -> bytes:
        from pkcs11 import Mechanism

        digest = hashlib.sha256(tbs).digest()

        def sign(session: Any) -> bytes:
            priv = _p11_find(session, self.label, private=True)
            if priv is None:
                raise KMSUnavailable(f"PKCS#11 token {self.config.token_label!r} no longer holds the CA key "
                                     f"{self.label!r}")
            return bytes(priv.sign(digest, mechanism=Mechanism.ECDSA))

        raw = _p11_run(self.config, "sign with the CA key", sign)
        if len(raw) != 2 * _P256_HALF:
            raise CASignatureInvalid(f"the CA key in {self.where} returned a malformed ECDSA signature")
        return encode_dss_signature(int.from_bytes(raw[:_P256_HALF], "big"), int.from_bytes(raw[_P256_HALF:], "big"))

    def close(self) -> None:
        pass  # one session per operation (token_session): nothing stays open


def _p11_run(config: Any, what: str, op: Callable[[Any], T]) -> T:
    from pkcs11 import exceptions as p11e

    from eventward._internal.keys.kms.pkcs11 import token_session

    try:
        with token_session(config) as session:
            return op(session)
    except p11e.PKCS11Error as e:
        raise KMSUnavailable(f"PKCS#11 token {config.token_label!r}: {what} failed ({type(e).__name__})") from None


def _p11_find(session: Any, label: str, *, private: bool) -> Any:
    from pkcs11 import Attribute, KeyType, ObjectClass

    kind = ObjectClass.PRIVATE_KEY if private else ObjectClass.PUBLIC_KEY
    found = list(session.get_objects({Attribute.CLASS: kind, Attribute.KEY_TYPE: KeyType.EC, Attribute.LABEL: label}))
    if len(found) > 1:
        raise ConflictError(f"several PKCS#11 objects are labelled {label!r}; refusing to choose a CA key")
    return found[0] if found else None


def _p11_generate(session: Any, label: str) -> None:
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
    )
    params.generate_keypair(
        store=True, label=label, id=os.urandom(16),
        public_template={Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.MODIFIABLE: False},
        private_template={
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True, Attribute.DERIVE: False, Attribute.MODIFIABLE: False, Attribute.COPYABLE: False,
        },
    )


def _p11_check_sealed(priv: Any, token: str, label: str) -> None:
    """A CA key that was imported or could be exported is one somebody may hold a copy of."""
    from pkcs11 import Attribute

    ok = (priv[Attribute.SENSITIVE] and priv[Attribute.ALWAYS_SENSITIVE] and not priv[Attribute.EXTRACTABLE]
          and priv[Attribute.NEVER_EXTRACTABLE] and priv[Attribute.LOCAL])
    if not ok:
        raise ConfigError(f"PKCS#11 token {token!r}: the CA key {label!r} was not generated in the token or is "
                          "extractable; refusing to use it")


# --- Vault / OpenBao Transit -------------------------------------------------------------------


class TransitSigner:
    """An ``ecdsa-p256`` Transit key (not exportable, no plaintext backup). ``transit/sign`` gets the
    SHA-256 digest (``prehashed``) and answers an ASN.1 (DER) signature; the key version is pinned
    at open, so a rotation in Transit cannot silently change the CA key."""

    signature_algorithm = SignatureAlgorithmOID.ECDSA_WITH_SHA256

    def __init__(
        self, config: Any, name: str, *, create: bool, expect: ec.EllipticCurvePublicKey | None = None
    ) -> None:
        import hvac

        self.config, self.name = config, name
        self.where = f"Vault/OpenBao Transit at {config.url} (key {name!r})"
        verify: bool | str = str(config.ca_cert) if config.ca_cert else True
        self._client = hvac.Client(url=config.url, token=config.read_token(), verify=verify, timeout=config.timeout_s)
        try:
            data = self._read()
            if data is None:
                if not create:
                    raise ConfigError(f"Transit holds no CA key {name!r}: run 'eventward pki init'")
                self._call("create the CA key", lambda: self._transit.create_key(
                    name, key_type="ecdsa-p256", exportable=False, allow_plaintext_backup=False,
                    mount_point=config.mount))
                data = self._read()
            if data is None or data.get("type") != "ecdsa-p256" or data.get("exportable") or data.get(
                    "allow_plaintext_backup"):
                raise ConfigError(f"Transit key {name!r} is not a non-exportable ecdsa-p256 key; "
                                  "refusing it as the CA key")
            versions = {int(v): _p256(serialization.load_pem_public_key(str(k["public_key"]).encode()), self.where)
                        for v, k in data["keys"].items()}
            self.version = int(data["latest_version"])
            if expect is not None:  # the CA was made with one version; a later rotation must not replace it
                self.version = next((v for v, pub in versions.items() if pub == expect), self.version)
            self._public = versions[self.version]
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:  # never the token
        return f"TransitSigner({self.where!r})"

    @property
    def _transit(self) -> Any:
        return self._client.secrets.transit

    def _call(self, what: str, op: Callable[[], T]) -> T:
        from eventward._internal.keys.kms.transit import call_transit

        return call_transit(what, op, any_refusal=True)

    def _read(self) -> dict[str, Any] | None:
        from hvac import exceptions as hv

        def read() -> dict[str, Any] | None:
            try:
                return dict(self._transit.read_key(self.name, mount_point=self.config.mount)["data"])
            except hv.InvalidPath:
                return None
        return self._call("read the CA key", read)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, tbs: bytes) -> bytes:
        digest = base64.b64encode(hashlib.sha256(tbs).digest()).decode()
        answer = self._call("sign with the CA key", lambda: self._transit.sign_data(
            self.name, hash_input=digest, key_version=self.version, hash_algorithm="sha2-256", prehashed=True,
            marshaling_algorithm="asn1", mount_point=self.config.mount))
        try:
            prefix, version, b64 = str(answer["data"]["signature"]).split(":", 2)
            if prefix != "vault" or version != f"v{self.version}":
                raise ValueError
            return base64.b64decode(b64, validate=True)
        except (KeyError, TypeError, ValueError):
            raise CASignatureInvalid(f"{self.where} answered a malformed signature") from None

    def close(self) -> None:
        self._client.adapter.close()


# --- AWS KMS -----------------------------------------------------------------------------------


class AwsSigner:
    """An ``ECC_NIST_P256`` / ``SIGN_VERIFY`` KMS key named by an alias, used with ECDSA_SHA_256.

    Messages up to 4096 bytes (every certificate, and CRLs of a few dozen entries) are sent RAW and
    KMS hashes them; longer ones are sent as their SHA-256 DIGEST. Either way the answer is DER."""

    signature_algorithm = SignatureAlgorithmOID.ECDSA_WITH_SHA256

    def __init__(self, config: Any, alias: str, *, create: bool) -> None:
        import boto3
        import botocore.config

        self.config, self.alias = config, alias
        self.where = f"AWS KMS {config.region} ({alias})"

        def client() -> Any:
            session = boto3.session.Session(profile_name=config.profile, region_name=config.region)
            return session.client(
                "kms", endpoint_url=config.endpoint_url,
                config=botocore.config.Config(connect_timeout=config.timeout_s, read_timeout=config.timeout_s,
                                              retries={"max_attempts": 2}))
        self._kms = self._call("open a client (profile, region)", client)
        meta = self._describe()
        if meta is None:
            if not create:
                raise ConfigError(f"AWS KMS holds no CA key {alias}: run 'eventward pki init'")
            self._create()
            meta = self._describe()
        if meta is None or meta.get("KeySpec") != "ECC_NIST_P256" or meta.get("KeyUsage") != "SIGN_VERIFY":
            raise ConfigError(f"{alias} is not an ECC_NIST_P256 SIGN_VERIFY key; refusing it as the CA key")
        if meta.get("KeyState") != "Enabled":
            raise KMSUnavailable(f"the CA key {alias} is {meta.get('KeyState')}, not Enabled")
        self.key_id = str(meta["KeyId"])
        der = self._call("read the CA public key", lambda: self._kms.get_public_key(KeyId=self.key_id)["PublicKey"])
        self._public = _p256(serialization.load_der_public_key(der), self.where)

    def __repr__(self) -> str:
        return f"AwsSigner({self.where!r})"

    def _call(self, what: str, op: Callable[[], T]) -> T:
        import botocore.exceptions as bx

        try:
            return op()
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            raise KMSUnavailable(f"AWS KMS refused or failed: {what} ({code or 'error'})") from None
        except (bx.BotoCoreError, OSError) as e:
            raise KMSUnavailable(f"AWS KMS unreachable for: {what} ({type(e).__name__})") from None

    def _describe(self) -> dict[str, Any] | None:
        import botocore.exceptions as bx

        def describe() -> dict[str, Any] | None:
            try:
                return dict(self._kms.describe_key(KeyId=self.alias)["KeyMetadata"])
            except bx.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "NotFoundException":
                    return None
                raise
        return self._call("describe the CA key", describe)

    def _create(self) -> None:
        def make() -> None:
            key_id = self._kms.create_key(
                KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Description=f"eventward CA {self.alias}",
                Tags=[{"TagKey": "eventward", "TagValue": "ca"}])["KeyMetadata"]["KeyId"]
            self._kms.create_alias(AliasName=self.alias, TargetKeyId=key_id)
        self._call("create the CA key", make)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, tbs: bytes) -> bytes:
        if len(tbs) <= _AWS_RAW_MAX:
            message, kind = tbs, "RAW"
        else:
            message, kind = hashlib.sha256(tbs).digest(), "DIGEST"
        out = self._call("sign with the CA key", lambda: self._kms.sign(
            KeyId=self.key_id, Message=message, MessageType=kind, SigningAlgorithm="ECDSA_SHA_256"))
        sig = out.get("Signature") if isinstance(out, dict) else None
        if not isinstance(sig, bytes):
            raise CASignatureInvalid(f"{self.where} answered no signature")
        return sig

    def close(self) -> None:
        pass


# --- assembling X.509 with an external signer --------------------------------------------------


def _der_len(n: int) -> bytes:
    """A DER length (X.690 8.1.3): short form below 128, else 0x80|count then big-endian bytes.
    Hand-written because ``cryptography`` has no public DER writer and these are the only
    structures built here (a SEQUENCE and a BIT STRING around bytes it produced)."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(buf: bytes, off: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``off`` (definite lengths only)."""
    if off + 2 > len(buf):
        raise ValueError("truncated DER")
    tag, first = buf[off], buf[off + 1]
    start = off + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or start + count > len(buf):
            raise ValueError("bad DER length")
        length = int.from_bytes(buf[start:start + count], "big")
        start += count
    if start + length > len(buf):
        raise ValueError("truncated DER")
    return tag, start, start + length


def _algorithm_element(der: bytes, tbs: bytes) -> bytes:
    """The ``signatureAlgorithm`` element that follows ``tbs`` in a signed SEQUENCE."""
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30 or der[start:start + len(tbs)] != tbs:
        raise ValueError("unexpected certificate layout")
    _, _, alg_end = _tlv(der, start + len(tbs))
    return der[start + len(tbs):alg_end]


def _assemble(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    bits = b"\x03" + _der_len(len(signature) + 1) + b"\x00" + signature
    body = tbs + algorithm + bits
    return b"\x30" + _der_len(len(body)) + body


def _signature(signer: CASigner, tbs: bytes) -> bytes:
    """The signer's DER ECDSA signature over ``tbs``, re-encoded canonically; garbage is refused."""
    if signer.signature_algorithm != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise ConfigError(f"the CA key in {signer.where} does not sign with ECDSA-SHA256")
    raw = signer.sign(tbs)
    try:
        r, s = decode_dss_signature(bytes(raw))
    except (ValueError, TypeError):
        raise CASignatureInvalid(f"the CA key in {signer.where} returned a signature that is not DER ECDSA; "
                                 "nothing was issued") from None
    return encode_dss_signature(r, s)


def _throwaway() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sign_certificate(
    builder: x509.CertificateBuilder, signer: CASigner, issuer: x509.Certificate | None
) -> x509.Certificate:
    """``builder`` signed by ``signer`` and verified against ``issuer`` (None: self-signed, checked
    against the signer's public key). CASignatureInvalid when the signature does not verify."""
    draft = builder.sign(_throwaway(), hashes.SHA256())
    tbs = draft.tbs_certificate_bytes
    try:
        der = _assemble(tbs, _algorithm_element(draft.public_bytes(serialization.Encoding.DER), tbs),
                        _signature(signer, tbs))
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise CASignatureInvalid(f"the certificate signed by {signer.where} could not be assembled") from None
    against = cert if issuer is None else issuer
    try:
        if against.public_key() != signer.public_key():
            raise InvalidSignature
        cert.verify_directly_issued_by(against)
    except (InvalidSignature, ValueError, TypeError):
        raise CASignatureInvalid(f"the signature from {signer.where} does not verify under the CA certificate; "
                                 "nothing was issued") from None
    return cert


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: CASigner, issuer: x509.Certificate
) -> x509.CertificateRevocationList:
    """``builder`` signed by ``signer``, verified against ``issuer``'s public key before it is returned."""
    draft = builder.sign(_throwaway(), hashes.SHA256())
    tbs = draft.tbs_certlist_bytes
    try:
        der = _assemble(tbs, _algorithm_element(draft.public_bytes(serialization.Encoding.DER), tbs),
                        _signature(signer, tbs))
        crl = x509.load_der_x509_crl(der)
    except ValueError:
        raise CASignatureInvalid(f"the CRL signed by {signer.where} could not be assembled") from None
    pub = issuer.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub != signer.public_key() or not crl.is_signature_valid(pub):
        raise CASignatureInvalid(f"the CRL signature from {signer.where} does not verify under the CA certificate; "
                                 "nothing was published")
    return crl


# --- configuration: ``pki.ca_key`` in eventward.yaml -------------------------------------------


_SECTION_CLASSES = ("pkcs11", "transit", "aws")


def _section_class(backend: str) -> Any:
    from eventward._internal.keys.kms import _section_class as kms_section_class

    return kms_section_class(backend)


@dataclass(frozen=True)
class CAKeyConfig:
    """``pki.ca_key``: where the CA key lives, parsed and checked once when the configuration loads.
    ``key`` names it in the token/KMS (PKCS#11 label, Transit key name, AWS alias ``alias/<key>``);
    the backend's section is that backend's own frozen config (the same checks, and the same refusal
    of secrets written in the file, as ``kms.<backend>``). Left out, it is taken from
    ``kms.<backend>`` by :meth:`resolved` (what :func:`ca_key_config` returns)."""

    backend: str = "file"
    key: str = DEFAULT_KEY
    pkcs11: Pkcs11Config | None = None
    transit: TransitConfig | None = None
    aws: AwsKmsConfig | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"pki.ca_key.backend must be one of {', '.join(BACKENDS)}")
        if not isinstance(self.key, str) or not _KEY_NAME.match(self.key):
            raise ConfigError("pki.ca_key.key must be 1..64 of letters, digits, '.', '_', '-'")
        others = [name for name in _SECTION_CLASSES if name != self.backend and getattr(self, name) is not None]
        if others:
            raise ConfigError(f"pki.ca_key: unknown key(s) {', '.join(others)} (the backend is {self.backend})")

    @property
    def section(self) -> Pkcs11Config | TransitConfig | AwsKmsConfig | None:
        """The backend's settings (None for ``file``, or before :meth:`resolved` when left out)."""
        return None if self.backend == "file" else getattr(self, self.backend)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | CAKeyConfig | None, where: str = "pki.ca_key") -> CAKeyConfig:
        """Check a ``ca_key:`` section; ConfigError names the key at fault, never a secret's value."""
        if isinstance(doc, CAKeyConfig):
            return doc
        doc = {} if doc is None else doc
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        backend = doc.get("backend") or "file"
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ConfigError(f"{where}.backend must be one of {', '.join(BACKENDS)}")
        # another backend's section is refused too, unless null (as a dumped configuration writes it)
        unknown = sorted(str(k) for k, v in doc.items()
                         if k not in ("backend", "key", backend) and (k not in _SECTION_CLASSES or v is not None))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        key = doc.get("key")
        key = DEFAULT_KEY if key is None else key
        if not isinstance(key, str) or not _KEY_NAME.match(key):
            raise ConfigError(f"{where}.key must be 1..64 of letters, digits, '.', '_', '-'")
        section = doc.get(backend) if backend != "file" else None
        if section is None:
            return cls(backend, key)
        return cls(backend, key, **{backend: _section_class(backend).from_mapping(section, where=f"{where}.{backend}")})

    def resolved(self, kms: Mapping[str, Any] | None) -> CAKeyConfig:
        """This configuration with the backend's section taken from ``kms.<backend>`` when left out;
        ConfigError when neither gives one."""
        if self.backend == "file" or self.section is not None:
            return self
        from eventward._internal.keys.kms import KmsConfig

        kms_cfg = KmsConfig.from_mapping(kms)
        section = getattr(kms_cfg, self.backend, None) if kms_cfg.backend == self.backend else None
        if section is None:
            raise ConfigError(f"pki.ca_key.backend is {self.backend}: give pki.ca_key.{self.backend} "
                              f"(or configure kms.{self.backend}, which is then reused)")
        return replace(self, **{self.backend: section})


@dataclass(frozen=True)
class PkiConfig:
    """The ``pki:`` section of ``eventward.yaml``: only ``ca_key`` for now (see :class:`CAKeyConfig`)."""

    ca_key: CAKeyConfig = field(default_factory=CAKeyConfig)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | PkiConfig | None, where: str = "pki") -> PkiConfig:
        """Check a ``pki:`` section; ConfigError names the key at fault."""
        if isinstance(doc, PkiConfig):
            return doc
        doc = {} if doc is None else doc
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        unknown = sorted(str(k) for k in doc if k != "ca_key")
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        return cls(CAKeyConfig.from_mapping(doc.get("ca_key"), where=f"{where}.ca_key"))


def ca_key_config(pki: PkiConfig | Mapping[str, Any], kms: Mapping[str, Any] | None) -> CAKeyConfig:
    """``pki.ca_key`` checked and resolved (its section from ``kms.<backend>`` when left out):
    unknown keys and backends refused by name."""
    return PkiConfig.from_mapping(pki).ca_key.resolved(kms)


def connect_signer(
    cfg: CAKeyConfig, *, create: bool, expect: ec.EllipticCurvePublicKey | None = None
) -> CASigner:
    """The configured external signer (not ``file``); with ``create`` the key is made in the
    token/KMS when it does not exist yet (an existing key of that name is used as it is).
    ``expect`` is the CA certificate's key: Transit then signs with the version that holds it."""
    if cfg.backend == "file":
        raise ConfigError("the file CA key is opened from certs/ca.key, not connected")
    cfg = cfg.resolved(None)  # a section left out and never resolved against kms: ConfigError, by name
    if cfg.pkcs11 is not None:
        return Pkcs11Signer.open(cfg.pkcs11, cfg.key, create=create)
    if cfg.transit is not None:
        return TransitSigner(cfg.transit, cfg.key, create=create, expect=expect)
    return AwsSigner(cfg.aws, f"alias/{cfg.key}", create=create)


def describe(cfg: CAKeyConfig) -> str:
    """Where the CA key lives, for ``eventward threats`` and the CLI (no secret, no connection)."""
    if cfg.backend == "file":
        return "a 0600 file in the home (certs/ca.key)"
    if cfg.backend == "pkcs11":
        return f"PKCS#11 token {getattr(cfg.pkcs11, 'token_label', None)!r} (key label {cfg.key!r})"
    if cfg.backend == "transit":
        return f"Vault/OpenBao Transit at {getattr(cfg.transit, 'url', None)} (key {cfg.key!r})"
    return f"AWS KMS {getattr(cfg.aws, 'region', None)} (alias/{cfg.key})"


def config_for(certs: Path) -> CAKeyConfig:
    """The CA key configuration of the home that holds ``certs`` (``<home>/eventward.yaml``);
    a certificate directory outside a configured home uses the file key."""
    from eventward._internal.config import Config

    cfg = Config.load(certs.parent / "eventward.yaml")
    return ca_key_config(cfg.pki, cfg.kms)


__all__ = [
    "BACKENDS", "AwsSigner", "CAKeyConfig", "CASigner", "FileSigner", "Pkcs11Signer", "PkiConfig", "TransitSigner",
    "ca_key_config", "config_for", "connect_signer", "describe", "sign_certificate", "sign_crl",
]
