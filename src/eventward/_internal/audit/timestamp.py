"""RFC 3161 timestamps of audit checkpoints: a third party's signed statement of *when*.

A checkpoint says when the log claims it was signed; a timestamp authority (TSA) says the
checkpoint text existed at ``genTime``, under its own key. Together with a witness this pins the
log in time: a log that later shows a different history for that moment contradicts a token
anyone can check offline.

``request_timestamp`` sends a TimeStampReq (SHA-256 of the exact checkpoint text, a random nonce,
certReq) over HTTP (``application/timestamp-query``) and checks the reply; ``verify_timestamp``
checks a token offline against the checkpoint text and the TSA certificate the verifier pins:
message imprint, the CMS signed attributes (content type, message digest, ESS signing
certificate), the signature with the pinned certificate's key, the certificate's
``timeStamping`` extended key usage, and optionally that a given CA issued it. Parsing is
asn1crypto's; signatures are ``cryptography``'s. Every failure is a TimestampError.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from eventward.errors import TimestampError

MAX_RESPONSE_BYTES = 256 * 1024
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


@dataclass(frozen=True)
class Timestamp:
    """A verified token: when, by whom (the TSA certificate's subject), its serial and policy."""

    gen_time: datetime
    serial: int
    policy: str
    tsa: str
    token: bytes


def timestamp_request(data: bytes, nonce: int | None = None) -> tuple[bytes, int]:
    """DER TimeStampReq for SHA-256(``data``) and the nonce it carries."""
    nonce = int.from_bytes(os.urandom(8), "big") if nonce is None else nonce
    req = tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": hashlib.sha256(data).digest(),
        },
        "nonce": nonce,
        "cert_req": True,
    })
    return req.dump(), nonce


def request_timestamp(url: str, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Ask the TSA at ``url`` to timestamp ``data``; return the token (DER ContentInfo)."""
    if not url.startswith(("http://", "https://")):
        raise TimestampError("the TSA URL must be http:// or https://")
    body, nonce = timestamp_request(data)
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/timestamp-query"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            raw = resp.read(MAX_RESPONSE_BYTES + 1)
    except (urllib.error.URLError, OSError) as e:
        raise TimestampError(f"timestamp authority {url} cannot be reached ({type(e).__name__})") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise TimestampError("timestamp response too large")
    try:
        parsed = tsp.TimeStampResp.load(raw)
        status = parsed["status"]["status"].native
        token = parsed["time_stamp_token"]
    except (ValueError, TypeError, KeyError):
        raise TimestampError("timestamp response is not an RFC 3161 TimeStampResp") from None
    if status not in ("granted", "granted_with_mods") or token.native is None:
        raise TimestampError(f"timestamp authority refused the request (status {status})")
    der = token.dump()
    info = _tst_info(der)
    if info["nonce"].native != nonce:
        raise TimestampError("timestamp response does not carry the request's nonce (replayed?)")
    return der


def _tst_info(token: bytes) -> tsp.TSTInfo:
    try:
        ci = cms.ContentInfo.load(token)
        if ci["content_type"].native != "signed_data":
            raise ValueError
        encap = ci["content"]["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise ValueError
        info = encap["content"].parsed
        info.native  # noqa: B018 - forces a full parse, so malformed inner fields fail here
        return info
    except (ValueError, TypeError, KeyError, AttributeError):
        raise TimestampError("not an RFC 3161 timestamp token") from None


def verify_timestamp(token: bytes, data: bytes, tsa_cert: bytes, *, ca_cert: bytes | None = None) -> Timestamp:
    """Check ``token`` covers SHA-256(``data``) and is signed by the pinned TSA certificate (PEM)."""
    try:
        cert = x509.load_pem_x509_certificate(tsa_cert)
        ca = x509.load_pem_x509_certificate(ca_cert) if ca_cert is not None else None
    except ValueError:
        raise TimestampError("the TSA (or CA) certificate is not PEM") from None
    info = _tst_info(token)
    imprint = info["message_imprint"]
    alg = imprint["hash_algorithm"]["algorithm"].native
    if alg not in _HASHES or imprint["hashed_message"].native != hashlib.new(alg, data).digest():
        raise TimestampError("the timestamp is for other data (message imprint mismatch)")
    try:
        signed = cms.ContentInfo.load(token)["content"]
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise ValueError
        si = signers[0]
        attrs = si["signed_attrs"]
        content = signed["encap_content_info"]["content"].contents
        digest_alg = si["digest_algorithm"]["algorithm"].native
        found: dict[str, object] = {a["type"].native: a["values"][0] for a in attrs}
    except (ValueError, TypeError, KeyError, IndexError):
        raise TimestampError("timestamp token has no single well-formed signer") from None
    if digest_alg not in _HASHES:
        raise TimestampError(f"timestamp signed with unsupported digest {digest_alg}")
    if found.get("content_type") is None or found["content_type"].native != "tst_info":  # type: ignore[attr-defined]
        raise TimestampError("timestamp signed attributes do not name TSTInfo")
    md = found.get("message_digest")
    if md is None or md.native != hashlib.new(digest_alg, content).digest():  # type: ignore[attr-defined]
        raise TimestampError("timestamp signature does not cover its TSTInfo (message digest mismatch)")
    _check_ess(found, cert)
    signed_bytes = b"\x31" + attrs.dump()[1:]  # CMS signs the attributes' DER as a SET OF, not [0]
    _verify_sig(cert, si, signed_bytes, digest_alg)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.TIME_STAMPING not in eku:
        raise TimestampError("the TSA certificate is not for timestamping (extendedKeyUsage)")
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise TimestampError("the TSA certificate was not issued by the given CA") from None
    gen = info["gen_time"].native
    if not isinstance(gen, datetime) or not (cert.not_valid_before_utc <= gen <= cert.not_valid_after_utc):
        raise TimestampError("the timestamp is outside the TSA certificate's validity")
    return Timestamp(gen, int(info["serial_number"].native), str(info["policy"].dotted), cert.subject.rfc4514_string(),
                     token)


def _check_ess(found: dict[str, object], cert: x509.Certificate) -> None:
    """The ESS signing-certificate attribute (v1 SHA-1 or v2) must name the pinned certificate."""
    der = cert.public_bytes(Encoding.DER)
    v2 = found.get("signing_certificate_v2")
    v1 = found.get("signing_certificate")
    try:
        if v2 is not None:
            ids = v2["certs"]  # type: ignore[index]
            alg = ids[0]["hash_algorithm"]["algorithm"].native or "sha256"
            ok = ids[0]["cert_hash"].native == hashlib.new(alg, der).digest()
        elif v1 is not None:
            ok = v1["certs"][0]["cert_hash"].native == hashlib.sha1(der).digest()  # type: ignore[index]  # noqa: S324
        else:
            ok = False
    except (KeyError, IndexError, TypeError, ValueError):
        ok = False
    if not ok:
        raise TimestampError("the timestamp was not signed with the pinned TSA certificate (ESS signing certificate)")


def _verify_sig(cert: x509.Certificate, si: cms.SignerInfo, signed: bytes, digest_alg: str) -> None:
    sig = si["signature"].native
    h = _HASHES[digest_alg]()
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, signed, ec.ECDSA(h))
        elif isinstance(key, rsa.RSAPublicKey):
            if si["signature_algorithm"]["algorithm"].native == "rsassa_pss":
                key.verify(sig, signed, padding.PSS(padding.MGF1(h), padding.PSS.AUTO), h)
            else:
                key.verify(sig, signed, padding.PKCS1v15(), h)
        else:
            raise TimestampError("the TSA key type is not supported (RSA or EC)")
    except InvalidSignature:
        raise TimestampError("the timestamp signature does not verify with the pinned TSA certificate") from None

