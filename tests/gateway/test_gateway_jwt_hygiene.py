"""JWT hygiene (issue 21): explicit typing, issuer-qualified principals, stale JWKS, per-IP limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventward._internal.gateway.auth import JwtAuthenticator
from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.gateway.jwks import parse_jwks
from eventward.errors import AuthenticationError, ConfigError
from support_wait import wait_until

from .conftest import AUDIENCE, ISSUER, Running, gateway_config, start_gateway
from .gw_support import Pki, call, claims, write_jwks
from .test_gateway_jwt import assert_refused, whoami


def test_attack_jwt_typ_confusion(jwt_gateway: Running, gw_pki: Pki, signers) -> None:
    """A token of another type (logout, security event, DPoP proof, none at all) signed by the
    trusted IdP is not an access token."""
    good = claims(ISSUER, AUDIENCE, sub="svc-ec")
    for typ in ("logout+jwt", "secevent+jwt", "dpop+jwt", "JOSE", None):
        token = signers["ec"].sign(good, typ=typ)
        assert_refused(whoami(jwt_gateway, token, gw_pki), "bad_typ", token)
    for typ in ("JWT", "at+jwt", "application/at+jwt"):
        r = whoami(jwt_gateway, signers["ec"].sign(good, typ=typ), gw_pki)
        assert r.status == 200 and r.json["principal"] == "svc-ec", r.raw
    assert jwt_gateway.metrics.denials.value("bad_typ") >= 5


def test_attack_jwt_sub_admin(jwt_gateway: Running, gw_pki: Pki, signers) -> None:
    """``sub: admin`` from the IdP is ``jwt:<issuer>:admin``, which holds none of admin's grants."""
    token = signers["rsa"].sign(claims(ISSUER, AUDIENCE, sub="admin"))
    r = whoami(jwt_gateway, token, gw_pki)
    assert r.status == 200, r.raw
    assert r.json["principal"] == "jwt:idp.test.local:admin"
    r = call(
        jwt_gateway.port, gw_pki.client_ctx(None), "GET", "/v1/audit/checkpoint",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status == 403, r.raw
    # a subject that tries to smuggle a namespace is still namespaced
    token = signers["rsa"].sign(claims(ISSUER, AUDIENCE, sub="idp.test.local:svc-rsa"))
    assert whoami(jwt_gateway, token, gw_pki).json["principal"] == "jwt:idp.test.local:idp.test.local:svc-rsa"


def test_subject_rules_are_issuer_qualified(signers) -> None:
    keys = parse_jwks({"keys": [signers["ec"].public_jwk()]}, "test")
    auth = JwtAuthenticator(
        keys, issuer=ISSUER, audience=AUDIENCE, issuer_alias="corp", subject_rules=r"RULE:^corp:(svc-.*)$/$1/"
    )

    def name(sub: str) -> str:
        return auth.authenticate(f"Bearer {signers['ec'].sign(claims(ISSUER, AUDIENCE, sub=sub))}", None).name

    assert name("svc-a") == "svc-a"
    assert name("ops") == "jwt:corp:ops"
    with pytest.raises(ConfigError, match="issuer_alias"):
        JwtAuthenticator(keys, issuer="urn:no-host", audience=AUDIENCE)


def test_stale_keys_fail_closed_with_a_clock(signers) -> None:
    now = [0.0]
    keys = parse_jwks({"keys": [signers["ec"].public_jwk()]}, "test")
    auth = JwtAuthenticator(keys, issuer=ISSUER, audience=AUDIENCE, max_key_age_s=60, clock=lambda: now[0])
    header = f"Bearer {signers['ec'].sign(claims(ISSUER, AUDIENCE, sub='svc-ec'))}"
    assert auth.authenticate(header, None).name == "jwt:idp.test.local:svc-ec"
    now[0] = 61.0
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate(header, None)
    assert e.value.details["reason"] == "jwks_stale"
    auth.set_keys(keys)  # a successful refresh
    assert auth.authenticate(header, None).name == "jwt:idp.test.local:svc-ec"


def test_attack_stale_jwks_after_failed_refresh(gw_pki: Pki, signers, tmp_path: Path) -> None:
    """An IdP that rotated away a compromised key while the gateway could not refresh: the old
    keys stop verifying after max_key_age_s instead of staying valid forever."""
    path = write_jwks(tmp_path / "jwks.json", [signers["rsa"]])
    cfg = gateway_config(
        gw_pki, auth="jwt",
        jwt={"jwks_file": str(path), "issuer": ISSUER, "audience": AUDIENCE, "refresh_s": 0.2, "max_key_age_s": 2.0},
    )
    run = start_gateway(cfg, tmp_path / "home")
    try:
        token = signers["rsa"].sign(claims(ISSUER, AUDIENCE))
        wait_until(lambda: whoami(run, token, gw_pki).status == 200, timeout=5, what="fresh keys")
        path.write_text("{not json")  # every refresh fails from now on
        r = wait_until(lambda: (x := whoami(run, token, gw_pki)).status == 401 and x, timeout=5, what="stale")
        assert_refused(r, "jwks_stale", token)
        write_jwks(path, [signers["rsa"]])  # the IdP is reachable again
        wait_until(lambda: whoami(run, token, gw_pki).status == 200, timeout=5, what="keys refreshed")
    finally:
        run.gw.stop()


def test_attack_preauth_flood_per_ip(gw_pki: Pki, jwks_file: Path, tmp_path: Path) -> None:
    """Garbage tokens from one address are cut off before they are parsed or verified."""
    cfg = gateway_config(
        gw_pki, auth="jwt",
        jwt={"jwks_file": str(jwks_file), "issuer": ISSUER, "audience": AUDIENCE},
        limits={"preauth_rate_per_ip_per_s": 0.5, "preauth_burst_per_ip": 5},
    )
    run = start_gateway(cfg, tmp_path / "home")
    try:
        statuses = [whoami(run, "x.y.z", gw_pki).status for _ in range(20)]
        assert statuses[:5] == [401] * 5
        assert statuses[5:].count(429) >= 14
        assert run.metrics.denials.value("preauth_rate") >= 14
        assert run.metrics.denials.value("malformed") <= 6  # the token parser ran for the burst only
    finally:
        run.gw.stop()


def test_bad_jwt_config_is_refused() -> None:
    base = {"auth": "jwt", "jwt": {"jwks_file": "x.json", "issuer": ISSUER, "audience": AUDIENCE}}
    with pytest.raises(ConfigError, match="max_key_age_s"):
        GatewayConfig.from_mapping({**base, "jwt": {**base["jwt"], "refresh_s": 600, "max_key_age_s": 60}})
    with pytest.raises(ConfigError, match="principal mapping rule"):
        GatewayConfig.from_mapping({**base, "jwt": {**base["jwt"], "subject_rules": "RULE:(a/b"}})
    with pytest.raises(ConfigError, match="preauth"):
        GatewayConfig.from_mapping({"limits": {"preauth_burst_per_ip": 0}})
