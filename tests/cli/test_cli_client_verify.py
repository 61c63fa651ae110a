"""Client mode verifies what the control plane serves, against keys pinned out of band.

``trust list`` checks every trust entry against the anchor key pinned in the operator's profile,
and ``audit verify`` checks the served checkpoint against the pinned audit key and a consistency
proof from the last checkpoint this verifier kept (the state file home mode uses too). TLS to a
certificate from the deployment CA is not enough: a man in the middle holding such a certificate
(a compromised replica, a proxy) is played here by a stub HTTPS server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli import test_cli_client_mode as shared
from cli.test_cli_client_mode import OPERATOR, ControlPlane, add_profile, cli
from eventward._internal import demo, pki
from eventward._internal.audit.checkpoint import sign_checkpoint, verify_checkpoint
from eventward._internal.audit.signing import AuditSigner, load_signer
from eventward._internal.control.anchor import Anchor
from eventward._internal.control.http import HttpControlAPI
from eventward._internal.home import Home

plane, pins, profiles = shared.plane, shared.pins, shared.profiles  # the same fixtures: this module's own plane

Answer = Callable[[str, dict[str, list[str]]], Any]  # (path, query) -> JSON document


class _Stub(BaseHTTPRequestHandler):
    answer: Answer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        body = orjson.dumps(type(self).answer(url.path, parse_qs(url.query)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mitm(plane: ControlPlane) -> Iterator[Callable[[Answer], str]]:
    """Start a stub HTTPS server answering with ``answer``, presenting a certificate from the
    deployment's own CA (so TLS verification against the profile's CA passes); its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> str:
        cert, key = pki.ensure_server_cert(Path(plane.home) / "certs", "mitm")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        handler = type("Stub", (_Stub,), {"answer": staticmethod(answer)})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"https://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _api(plane: ControlPlane) -> HttpControlAPI:
    cert, key = plane.certs[OPERATOR]
    return HttpControlAPI([plane.url], principal="", cert=str(cert), key=str(key), ca=str(plane.ca))


def _profile_via(tmp_path: Path, plane: ControlPlane, url: str, pins: tuple[str, ...]) -> Path:
    d = tmp_path / "mitm-profiles"
    add_profile(d, "ops", [url], plane.ca, *plane.certs[OPERATOR], *pins)
    return d


def _error(r: Any, code: str) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error ({code}):"), r.stderr
    return lines[0]


# --- trust list ----------------------------------------------------------------------------------


def test_trust_list_shows_entries_signed_by_the_pinned_anchor(plane: ControlPlane, profiles: Path) -> None:
    r = cli(profiles, "--profile", "ops", "trust", "list", "--json")
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    assert doc["refused"] == [] and all(k["verified"] for k in doc["keys"])
    assert demo.PRODUCER in {k["principal"] for k in doc["keys"]}


def test_attack_forged_trust_entry_is_refused_by_client_trust_list(
    plane: ControlPlane, pins: tuple[str, ...], mitm: Callable[[Answer], str], tmp_path: Path
) -> None:
    """A relay holding a certificate from the deployment CA serves the genuine entries plus one whose
    signed body it altered (another principal, wider grants) and one signed by its own key: the CLI
    showed all of them, vouched for by TLS alone. Now only the anchor's entries are shown, and the
    command fails (exit 8) naming how many it refused."""
    genuine = _api(plane).trust_entries()
    assert genuine
    body = orjson.loads(base64.urlsafe_b64decode(genuine[0]["body"] + "=" * (-len(genuine[0]["body"]) % 4)))
    altered_body = {**body, "principal": "mallory-svc", "may_seal": {"orders": ["*"]}}
    altered = {**genuine[0], "body": base64.urlsafe_b64encode(
        orjson.dumps(altered_body, option=orjson.OPT_SORT_KEYS)).rstrip(b"=").decode()}
    own = Anchor(Ed25519PrivateKey.generate()).sign("trust", {**body, "principal": "eve-svc", "kid": "eve-1"})
    served = [*genuine, altered, own]
    url = mitm(lambda path, q: {"entries": served} if path == "/v1/control/trust" else {})
    r = cli(_profile_via(tmp_path, plane, url, pins), "--profile", "ops", "trust", "list", "--json")
    assert r.returncode == 8, (r.stdout, r.stderr)
    assert "not signed by the pinned anchor: 2" in _error(r, "bad_seal")
    doc = orjson.loads(r.stdout)
    assert doc["refused"] == [len(genuine), len(genuine) + 1]
    shown = {k["principal"] for k in doc["keys"]}
    assert "mallory-svc" not in shown and "eve-svc" not in shown and len(doc["keys"]) == len(genuine)


def test_trust_list_without_a_pinned_anchor_is_refused(plane: ControlPlane, tmp_path: Path) -> None:
    d = tmp_path / "unpinned"
    add_profile(d, "ops", [plane.url], plane.ca, *plane.certs[OPERATOR])
    r = cli(d, "--profile", "ops", "trust", "list")
    assert r.returncode == 9 and r.stdout == "", r.stderr
    assert "pins no anchor key" in _error(r, "config")


# --- audit verify ---------------------------------------------------------------------------------


def test_audit_verify_in_client_mode_keeps_and_extends_its_checkpoint(
    plane: ControlPlane, profiles: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state" / "audit.checkpoint"
    first = cli(profiles, "--profile", "ops", "audit", "verify", "--state", str(state), "--json")
    assert first.returncode == 0, first.stderr
    one = orjson.loads(first.stdout)
    assert one["ok"] and one["remembered_size"] is None and one["saved_size"] == one["size"] > 0
    assert state.exists() and oct(state.stat().st_mode & 0o777) == "0o600"
    second = cli(profiles, "--profile", "ops", "audit", "verify", "--state", str(state), "--json")
    assert second.returncode == 0, second.stderr
    two = orjson.loads(second.stdout)
    assert two["remembered_size"] == one["size"] and two["size"] > one["size"]  # the read itself was audited
    tail = orjson.loads(cli(profiles, "--profile", "ops", "audit", "tail", "-n", "20", "--json").stdout)["records"]
    reads = [t for t in tail if t["action"] == "control.audit_consistency"]
    assert reads and reads[-1]["principal"] == OPERATOR and reads[-1]["outcome"] == "ok"
    people = cli(profiles, "--profile", "ops", "audit", "verify", "--state", str(state))
    assert people.returncode == 0 and "OK: checkpoint of" in people.stdout, people.stderr
    refused = cli(profiles, "--profile", "intern", "audit", "verify", "--no-state")
    assert refused.returncode == 3, refused.stderr  # ReadAudit, decided by the policy (and audited)
    _error(refused, "forbidden")


def _kept(plane: ControlPlane, profiles: Path, state: Path) -> Any:
    r = cli(profiles, "--profile", "ops", "audit", "verify", "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    return verify_checkpoint(state.read_text(), load_signer(Home(plane.home).audit_key).verifier)


def test_attack_served_checkpoint_signed_by_another_key(
    plane: ControlPlane, profiles: Path, pins: tuple[str, ...], mitm: Callable[[Answer], str],
    tmp_path: Path,
) -> None:
    state = tmp_path / "audit.checkpoint"
    kept = _kept(plane, profiles, state)
    other = AuditSigner(Ed25519PrivateKey.generate())
    fake = sign_checkpoint(other, kept.size + 10, os.urandom(32), kept.time)
    url = mitm(lambda path, q: {"checkpoint": fake.text, "proof": None})
    r = cli(_profile_via(tmp_path, plane, url, pins), "--profile", "ops", "audit", "verify", "--state", str(state))
    assert r.returncode == 8, (r.stdout, r.stderr)
    _error(r, "audit_integrity")
    assert state.read_text() == kept.text  # nothing remembered from the forgery


def test_attack_rolled_back_tree_is_refused(
    plane: ControlPlane, profiles: Path, pins: tuple[str, ...], mitm: Callable[[Answer], str],
    tmp_path: Path,
) -> None:
    """A genuine but older checkpoint (the log restored from a backup, or truncated) after a newer
    one was verified: the old client-mode trust list/verify had no memory, so it passed."""
    old_text, _ = _api_consistency(plane, 0)
    state = tmp_path / "audit.checkpoint"
    kept = _kept(plane, profiles, state)
    assert verify_checkpoint(old_text, load_signer(Home(plane.home).audit_key).verifier).size < kept.size
    url = mitm(lambda path, q: {"checkpoint": old_text, "proof": None})
    r = cli(_profile_via(tmp_path, plane, url, pins), "--profile", "ops", "audit", "verify", "--state", str(state))
    assert r.returncode == 8, (r.stdout, r.stderr)
    assert "rollback" in _error(r, "audit_rollback")
    assert state.read_text() == kept.text


@pytest.mark.parametrize("grow", [0, 7])
def test_attack_forked_tree_is_refused(
    plane: ControlPlane, profiles: Path, pins: tuple[str, ...], mitm: Callable[[Answer], str],
    tmp_path: Path, grow: int,
) -> None:
    """Another history signed by the real audit key (a rewritten log): at the same size its root
    differs, at a larger size no consistency proof from the kept tree can verify."""
    state = tmp_path / "audit.checkpoint"
    kept = _kept(plane, profiles, state)
    signer = load_signer(Home(plane.home).audit_key)
    forked = sign_checkpoint(signer, kept.size + grow, os.urandom(32), kept.time)
    proof = {"old_size": kept.size, "new_size": kept.size + grow,
             "hashes": [base64.b64encode(os.urandom(32)).decode() for _ in range(3)]} if grow else None
    asked: list[str] = []

    def answer(path: str, q: dict[str, list[str]]) -> Any:
        asked.extend(q.get("from_size", []))
        return {"checkpoint": forked.text, "proof": proof}

    url = mitm(answer)
    r = cli(_profile_via(tmp_path, plane, url, pins), "--profile", "ops", "audit", "verify", "--state", str(state))
    assert r.returncode == 8, (r.stdout, r.stderr)
    assert "fork" in _error(r, "audit_fork")
    assert asked == [str(kept.size)]  # the proof is asked from the size this verifier kept
    assert state.read_text() == kept.text


def _api_consistency(plane: ControlPlane, from_size: int) -> tuple[str, Any]:
    doc = _api(plane).call("GET", "/v1/control/audit/consistency", params={"from_size": from_size})
    return doc["checkpoint"], doc["proof"]


# --- pinning ---------------------------------------------------------------------------------------


def test_attack_profile_pins_are_checked_and_never_echoed(tmp_path: Path) -> None:
    """A pin that is not a key (a paste of something else, maybe a secret) is refused by field name
    at ``profile add``, not at first use; a service's grant.json gives the anchor it carries."""
    from eventward._internal.home import write_secret

    ca, cert, key = tmp_path / "ca.crt", tmp_path / "ops.crt", tmp_path / "ops.key"
    ca.write_text("ca")
    cert.write_text("cert")
    write_secret(key, b"key")
    profile_dir = tmp_path / "profiles"
    base = ["profile", "add", "ops", "--url", "https://127.0.0.1:8443", "--ca", str(ca), "--cert", str(cert),
            "--key", str(key)]
    for extra, field in ((["--anchor", "hunter2-not-a-key"], "anchor"),
                         (["--audit-key", "hunter2+00+AAAA"], "audit_key")):
        r = cli(profile_dir, *base, *extra)
        assert r.returncode == 9, r.stderr
        assert f"{field} is not" in _error(r, "config") and "hunter2" not in r.stderr
    anchor = Anchor(Ed25519PrivateKey.generate()).public_text
    grant = tmp_path / "grant.json"
    grant.write_bytes(orjson.dumps({"principal": "billing-svc", "anchor": anchor}))
    vkey = AuditSigner(Ed25519PrivateKey.generate()).verifier.vkey()
    assert cli(profile_dir, *base, "--anchor", str(grant), "--audit-key", vkey).returncode == 0
    listed = orjson.loads(cli(profile_dir, "profile", "list", "--json").stdout)["profiles"]
    assert (listed[0]["anchor"], listed[0]["audit_key"]) == (anchor, vkey)
