"""Bearer-JWT perimeter over real TLS: forged, stale, misdirected and confused tokens all get 401."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from eventward._internal.gateway.auth import JwtAuthenticator
from eventward._internal.gateway.jwks import fetch_url, load_file, parse_jwks
from eventward.errors import AuthenticationError, ConfigError
from support_wait import wait_until

from .conftest import AUDIENCE, ISSUER, Running, gateway_config, start_gateway
from .gw_support import Pki, Signer, b64url, call, claims, write_jwks


def whoami(gw: Running, token: str | None, gw_pki: Pki, client: str | None = None):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return call(gw.port, gw_pki.client_ctx(client), "GET", "/v1/whoami", headers=headers)


def assert_refused(r, reason: str, token: str | None = None) -> None:
    assert r.status == 401, r.raw
    assert r.json["code"] == "unauthenticated"
    assert r.json["reason"] == reason
    assert r.headers["www-authenticate"].startswith('Bearer realm="eventward"')
    if token:
        for part in token.split("."):
            if len(part) >= 8:
                assert part not in r.raw.decode()
                assert all(part not in v for v in r.headers.values())


@pytest.mark.parametrize("which", ["rsa", "ec", "ed"])
def test_valid_token_for_each_algorithm(jwt_gateway: Running, gw_pki: Pki, signers, which) -> None:
    r = whoami(jwt_gateway, signers[which].sign(claims(ISSUER, AUDIENCE, sub=f"svc-{which}")), gw_pki)
    assert r.status == 200, r.raw
    assert r.json == {"principal": f"svc-{which}", "method": "jwt"}


def test_valid_token_reaches_backend_as_its_subject(jwt_gateway: Running, gw_pki: Pki, signers) -> None:
    token = signers["ec"].sign(claims(ISSUER, AUDIENCE, sub="orders"))
    r = call(
        jwt_gateway.port,
        gw_pki.client_ctx(None),
        "POST",
        "/v1/topics/orders/events",
        [{"specversion": "1.0", "id": "j1", "source": "/t", "type": "T", "data": {}}],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status == 200, r.raw
    assert jwt_gateway.backend.calls[-1] == ("publish", "orders")


def _forgeries(signers: dict[str, Signer]) -> list[tuple[str, str]]:
    good = claims(ISSUER, AUDIENCE)
    rsa_signer = signers["rsa"]
    impostor = Signer(rsa_signer.kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    now = int(time.time())
    out = [
        ("bad_signature", impostor.sign(good)),  # right kid, wrong private key
        ("bad_issuer", rsa_signer.sign({**good, "iss": "https://evil.example"})),
        ("bad_audience", rsa_signer.sign({**good, "aud": "some-other-api"})),
        ("expired", rsa_signer.sign({**good, "exp": now - 60, "iat": now - 400})),
        ("not_yet_valid", rsa_signer.sign({**good, "nbf": now + 600})),
        ("not_yet_valid", rsa_signer.sign({**good, "iat": now + 600})),
        ("missing_claim", rsa_signer.sign({k: v for k, v in good.items() if k != "exp"})),
        ("bad_principal", rsa_signer.sign({k: v for k, v in good.items() if k != "sub"})),
        ("unknown_kid", Signer("no-such-kid", "RS256", rsa_signer.key).sign(good)),
        ("malformed", rsa_signer.sign(good, crit=["exp"])),  # unknown critical header (PyJWT refuses it)
    ]
    # tampered payload: same header and signature, escalated subject
    h, _, sig = rsa_signer.sign(good).split(".")
    out.append(("bad_signature", f"{h}.{b64url(json.dumps({**good, 'sub': 'admin'}).encode())}.{sig}"))
    # alg=none, with a valid kid
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": rsa_signer.kid}).encode())
    body = b64url(json.dumps({**good, "sub": "admin"}).encode())
    out.append(("alg_not_allowed", f"{none_header}.{body}."))
    # HS256 keyed with the RSA *public* key (the classic confusion attack), valid kid
    pem = rsa_signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": rsa_signer.kid}).encode())
    mac = hmac.new(pem, f"{hs_header}.{body}".encode(), hashlib.sha256).digest()
    out.append(("alg_not_allowed", f"{hs_header}.{body}.{b64url(mac)}"))
    # missing kid
    out.append(("missing_kid", jwt.encode(good, rsa_signer.key, algorithm="RS256")))
    # an allowed alg against a key of another type: ES256 header naming the RSA key's kid
    out.append(("alg_key_mismatch", Signer(rsa_signer.kid, "ES256", signers["ec"].key).sign(good)))
    out.append(("malformed", "not.a.jwt"))
    return out


def test_forged_and_invalid_tokens_are_refused(jwt_gateway: Running, gw_pki: Pki, signers) -> None:
    before = list(jwt_gateway.backend.calls)
    for reason, token in _forgeries(signers):
        r = call(
            jwt_gateway.port,
            gw_pki.client_ctx(None),
            "POST",
            "/v1/topics/orders/events",
            [{"specversion": "1.0", "id": "x", "source": "/t", "type": "T"}],
            headers={"Authorization": f"Bearer {token}"},
        )
        assert_refused(r, reason, token)
    assert jwt_gateway.backend.calls == before
    denied = jwt_gateway.metrics.denials
    for reason in ("bad_signature", "alg_not_allowed", "unknown_kid", "expired"):
        assert denied.value(reason) >= 1
    records = [e for e in jwt_gateway.audit.events if e.action == "authenticate"]
    assert {"bad_signature", "alg_not_allowed", "missing_kid"} <= {e.reason for e in records}
    assert all(str(e.meta).find("eyJ") < 0 for e in records)  # no token in audit metadata


def test_missing_or_wrong_scheme_or_oversize_token(jwt_gateway: Running, gw_pki: Pki, signers) -> None:
    r = whoami(jwt_gateway, None, gw_pki)
    assert_refused(r, "missing_token")
    assert 'error="invalid_request"' in r.headers["www-authenticate"]
    r = call(
        jwt_gateway.port,
        gw_pki.client_ctx(None),
        "GET",
        "/v1/whoami",
        headers={"Authorization": "Basic b3JkZXJzOnB3"},
    )
    assert_refused(r, "bad_scheme")
    big = signers["rsa"].sign(claims(ISSUER, AUDIENCE, pad="x" * 5000))
    assert_refused(whoami(jwt_gateway, big, gw_pki), "token_too_large", big)
    # past the HTTP header size limit the parser refuses it: still problem details, still no echo
    huge = signers["rsa"].sign(claims(ISSUER, AUDIENCE, pad="x" * 9000))
    r = whoami(jwt_gateway, huge, gw_pki)
    assert r.status == 400 and r.json["code"] == "bad_input"
    assert huge.split(".")[1][:50] not in r.raw.decode()


def test_unknown_routes_answer_401_before_404(jwt_gateway: Running, gw_pki: Pki) -> None:
    r = call(jwt_gateway.port, gw_pki.client_ctx(None), "GET", "/v1/admin/secret-route")
    assert r.status == 401  # an unauthenticated client learns nothing about routes


def test_certificate_bound_token(jwt_gateway: Running, gw_pki: Pki, signers) -> None:
    thumb = b64url(hashlib.sha256(gw_pki.der("orders")).digest())
    token = signers["ed"].sign(claims(ISSUER, AUDIENCE, cnf={"x5t#S256": thumb}))
    assert whoami(jwt_gateway, token, gw_pki, "orders").status == 200
    assert_refused(whoami(jwt_gateway, token, gw_pki, "reader"), "cert_binding", token)  # stolen token
    assert_refused(whoami(jwt_gateway, token, gw_pki, None), "cert_binding", token)


def test_jwt_mode_still_verifies_presented_certificates(jwt_gateway: Running, gw_pki: Pki, signers) -> None:
    from .test_gateway_mtls import handshake_refusal

    assert handshake_refusal(jwt_gateway.port, gw_pki.client_ctx("rogue")) in ("handshake", "closed")


def test_principal_claim_is_configurable(signers) -> None:
    keys = parse_jwks({"keys": [signers["ec"].public_jwk()]}, "test")
    auth = JwtAuthenticator(keys, issuer=ISSUER, audience=AUDIENCE, principal_claim="client_id")
    token = signers["ec"].sign(claims(ISSUER, AUDIENCE, sub="user-1", client_id="svc-orders"))
    assert auth.authenticate(f"Bearer {token}", None).name == "jwt:idp.test.local:svc-orders"
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate(f"Bearer {signers['ec'].sign(claims(ISSUER, AUDIENCE))}", None)
    assert e.value.details["reason"] == "bad_principal"


def test_symmetric_and_none_algorithms_cannot_be_configured(signers) -> None:
    keys = parse_jwks({"keys": [signers["rsa"].public_jwk()]}, "test")
    for algs in (["HS256"], ["none"], ["RS256", "HS512"], []):
        with pytest.raises(ConfigError):
            JwtAuthenticator(keys, issuer=ISSUER, audience=AUDIENCE, algorithms=algs)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda k: {**k, "kty": "oct", "k": "c2VjcmV0"}, "refused|private"),
        (lambda k: {**k, "d": "AAAA"}, "private key material"),
        (lambda k: {kk: v for kk, v in k.items() if kk != "kid"}, "kid"),
        (lambda k: {**k, "alg": "HS256"}, "refused"),
        (lambda k: {**k, "n": "AQAB"}, "valid public key|at least 2048"),
    ],
)
def test_bad_jwks_entries_refused(signers, mutate, match) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_jwks({"keys": [mutate(signers["rsa"].public_jwk())]}, "jwks")


def test_jwks_duplicate_kid_and_shape(signers) -> None:
    k = signers["rsa"].public_jwk()
    with pytest.raises(ConfigError, match="twice"):
        parse_jwks({"keys": [k, k]}, "jwks")
    with pytest.raises(ConfigError):
        parse_jwks([k], "jwks")
    # encryption keys are skipped, and a set with no signing key is refused
    with pytest.raises(ConfigError, match="no signing keys"):
        parse_jwks({"keys": [{**k, "use": "enc"}]}, "jwks")


def test_jwks_url_fetch_over_loopback_and_https_only(signers, tmp_path: Path) -> None:
    body = json.dumps({"keys": [signers["ed"].public_jwk()]}).encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            payload = body if self.path == "/jwks" else b"x" * (1024 * 1024 + 10)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        port = srv.server_address[1]
        keys = fetch_url(f"http://127.0.0.1:{port}/jwks", 2.0)
        assert set(keys) == {"ed-1"}
        with pytest.raises(ConfigError, match="larger than"):
            fetch_url(f"http://127.0.0.1:{port}/huge", 2.0)
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)
    with pytest.raises(ConfigError, match="https"):
        fetch_url("http://idp.example.com/jwks", 1.0)  # refused before any connection
    with pytest.raises(ConfigError, match="cannot be fetched"):
        fetch_url(f"http://127.0.0.1:{port}/jwks", 0.5)  # server gone
    with pytest.raises(ConfigError, match="cannot be read"):
        load_file(tmp_path / "missing.json")


def test_jwks_refresh_rotates_keys_in_a_running_server(
    gw_pki: Pki, signers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_jwks(tmp_path / "jwks.json", [signers["rsa"]])
    cfg = gateway_config(
        gw_pki,
        auth="jwt",
        jwt={"jwks_file": str(path), "issuer": ISSUER, "audience": AUDIENCE, "refresh_s": 0.2},
    )
    run = start_gateway(cfg, tmp_path / "home")
    try:
        old = signers["rsa"].sign(claims(ISSUER, AUDIENCE))
        new = signers["ec"].sign(claims(ISSUER, AUDIENCE))
        assert whoami(run, old, gw_pki).status == 200
        assert_refused(whoami(run, new, gw_pki), "unknown_kid")
        write_jwks(path, [signers["ec"]])  # the IdP rotated
        wait_until(lambda: whoami(run, new, gw_pki).status == 200, timeout=5, what="rotated key accepted")
        assert_refused(whoami(run, old, gw_pki), "unknown_kid")
        caplog.set_level(logging.WARNING, logger="eventward")
        path.write_text("{not json")  # a broken refresh keeps the last good keys
        wait_until(lambda: "JWKS refresh failed" in caplog.text, timeout=5, what="a failed refresh ran")
        assert whoami(run, new, gw_pki).status == 200
    finally:
        run.gw.stop()
