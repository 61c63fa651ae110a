"""A service's own directory in client mode: its keys, its enrollment, nothing of anyone else's.

``ServiceIdentity.create`` makes, on the service host, an Ed25519 seal key, an Ed25519 dead-letter
key and a P-256 TLS key (all 0600, never sent anywhere) and an enrollment request: the public
halves, a CSR, and a proof of possession signed by the seal key. An administrator approves the
request on the control plane (``ControlPlane.approve``), which trusts the keys, issues the TLS
certificate and returns a grant signed by the control plane's anchor key; ``install`` stores it.
The directory never holds a keyring, master key, key store, audit key, CA key or other
principal's key (tests assert that on disk).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from cryptography.x509.oid import NameOID

from eventward._internal.client.trust import check_principal
from eventward._internal.control import anchor as statements
from eventward._internal.crypto.seal import Signer
from eventward._internal.home import read_secret, write_secret
from eventward.errors import ConfigError, InputError, SealError

_DOMAIN = b"eventward-enrollment-v1\n"
MAX_REQUEST_BYTES = 16 * 1024
_FIELDS = {"v", "principal", "seal_key", "dead_letter_key", "csr", "created", "proof"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > MAX_REQUEST_BYTES:
        raise InputError(f"enrollment request: {what} must be base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise InputError(f"enrollment request: {what} is not base64url") from None


def _ed25519(raw: bytes, what: str) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise InputError(f"enrollment request: {what} must be a 32-byte Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class EnrollmentRequest:
    """A parsed, proof-checked request: the keys are the service's, the CSR names the principal."""

    principal: str
    seal_key: Ed25519PublicKey
    dead_letter_key: Ed25519PublicKey
    csr_pem: bytes
    created: float

    @classmethod
    def parse(cls, raw: bytes) -> EnrollmentRequest:
        """Refuses anything malformed, oversized or whose proof of possession does not verify."""
        if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_REQUEST_BYTES:
            raise InputError(f"enrollment request must be at most {MAX_REQUEST_BYTES} bytes of JSON")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InputError("enrollment request is not JSON") from None
        if not isinstance(doc, dict) or set(doc) != _FIELDS or doc.get("v") != 1:
            raise InputError(f"enrollment request must have exactly the fields {', '.join(sorted(_FIELDS))} (v=1)")
        principal = check_principal(doc["principal"])
        if not isinstance(doc["csr"], str) or not isinstance(doc["created"], int | float):
            raise InputError("enrollment request: csr must be PEM text and created a time")
        seal_key = _ed25519(_unb64(doc["seal_key"], "seal_key"), "seal_key")
        dl_key = _ed25519(_unb64(doc["dead_letter_key"], "dead_letter_key"), "dead_letter_key")
        proof = _unb64(doc["proof"], "proof")
        body = {k: v for k, v in doc.items() if k != "proof"}
        try:
            seal_key.verify(proof, _DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        except InvalidSignature:
            raise InputError("enrollment request: the proof of possession does not verify") from None
        if seal_key.public_bytes(Encoding.Raw, PublicFormat.Raw) == dl_key.public_bytes(Encoding.Raw, PublicFormat.Raw):
            raise InputError("enrollment request: the seal and dead-letter keys must differ")
        return cls(principal, seal_key, dl_key, doc["csr"].encode(), float(doc["created"]))


class ServiceIdentity:
    """The files of one service: ``seal.key``, ``dead-letter.key``, ``tls.key`` (0600), the request,
    and after approval ``tls.crt``, ``ca.crt`` and ``grant.json`` (with the anchor public key)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- paths ----------------------------------------------------------------------------
    seal_key_path = property(lambda self: self.root / "seal.key")
    dead_letter_key_path = property(lambda self: self.root / "dead-letter.key")
    tls_key_path = property(lambda self: self.root / "tls.key")
    tls_cert_path = property(lambda self: self.root / "tls.crt")
    ca_path = property(lambda self: self.root / "ca.crt")
    request_path = property(lambda self: self.root / "enrollment.json")
    grant_path = property(lambda self: self.root / "grant.json")
    state_dir = property(lambda self: self.root / "state")

    @classmethod
    def create(cls, root: Path, principal: str) -> ServiceIdentity:
        """New keys and an enrollment request; refuses a directory that already has keys."""
        check_principal(principal)
        ident = cls(root)
        if ident.seal_key_path.exists():
            raise ConfigError(f"{root} already holds a service identity; use a new directory to re-enroll")
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        seal, dl = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        tls = ec.generate_private_key(ec.SECP256R1())
        write_secret(ident.seal_key_path, seal.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
        write_secret(ident.dead_letter_key_path, dl.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
        write_secret(ident.tls_key_path, tls.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, principal)]))
               .sign(tls, hashes.SHA256()))
        body = {
            "v": 1, "principal": principal,
            "seal_key": _b64(seal.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
            "dead_letter_key": _b64(dl.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(), "created": time.time(),
        }
        proof = seal.sign(_DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        ident.request_path.write_bytes(orjson.dumps({**body, "proof": _b64(proof)}, option=orjson.OPT_INDENT_2))
        return ident

    def install(self, grant_wire: bytes) -> dict[str, Any]:
        """Store an approved grant: it must be signed by the anchor it names (delivered out of band,
        from the administrator) and certify this directory's own TLS key for its principal."""
        try:
            wire = orjson.loads(grant_wire)
        except orjson.JSONDecodeError:
            raise InputError("grant is not JSON") from None
        if not isinstance(wire, dict) or not isinstance(wire.get("anchor"), str):
            raise InputError("grant must carry the control plane's anchor public key")
        anchor_key = statements.public_key_from_text(wire["anchor"])
        try:
            body = statements.verify(anchor_key, wire.get("statement"), "grant").body
        except SealError:
            raise InputError("grant is not signed by the anchor it names") from None
        request = orjson.loads(self.request_path.read_bytes())
        if body.get("principal") != request["principal"]:
            raise InputError("grant is for another principal")
        cert = x509.load_pem_x509_certificate(body["certificate"].encode())
        own = serialization.load_pem_private_key(read_secret(self.tls_key_path), password=None)
        if cert.public_key().public_numbers() != own.public_key().public_numbers():  # type: ignore[union-attr]
            raise InputError("grant certifies another TLS key than this service's")
        self.tls_cert_path.write_bytes(body["certificate"].encode())
        self.ca_path.write_bytes(body["ca"].encode())
        self.grant_path.write_bytes(orjson.dumps({**body, "anchor": wire["anchor"]}, option=orjson.OPT_INDENT_2))
        return body

    # --- what a client needs ------------------------------------------------------------
    @property
    def principal(self) -> str:
        return str(self.grant()["principal"])

    def grant(self) -> dict[str, Any]:
        try:
            return orjson.loads(self.grant_path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{self.root} is not enrolled yet: have an administrator approve "
                              f"{self.request_path.name} and install the grant") from None

    def anchor_key(self) -> Ed25519PublicKey:
        return statements.public_key_from_text(self.grant()["anchor"])

    def signer(self, purpose: str = "seal") -> Signer:
        path = self.seal_key_path if purpose == "seal" else self.dead_letter_key_path
        return Signer(self.principal, Ed25519PrivateKey.from_private_bytes(read_secret(path)))

    def __repr__(self) -> str:
        return f"ServiceIdentity({str(self.root)!r})"
