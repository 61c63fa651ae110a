"""NATS server configuration (a file, or a live server's monitoring ``/varz``) against the
hardening checklist: TLS on the client port with client authentication, authorization,
no plaintext secrets, TLS between cluster routes, gateways and leaf nodes, a monitoring
port that is loopback-only or HTTPS, payload limits, no ``no_auth_user``, no ``allow_non_tls``
and no payload tracing in the logs.

The configuration format is parsed here (blocks, arrays, ``:``/``=``/space separators,
``#`` and ``//`` comments, ``include`` relative to the including file) with the line of every
key, so each finding points at the line to change. ``nats-server -t`` stays the judge of
whether a file is valid; this parser only needs to read what the checklist asks about.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventward._internal.harden.findings import Finding, Rule, read_text
from eventward.errors import ConfigError, TransportUnavailable

MAX_PAYLOAD = 8 * 1024 * 1024
_KNOWN = {
    "listen", "port", "host", "net", "server_name", "tls", "jetstream", "cluster", "authorization",
    "accounts", "operator", "resolver", "leafnodes", "gateway", "http", "http_port", "https",
    "https_port", "monitor_port", "max_payload", "include", "websocket", "mqtt", "no_auth_user",
}
_UNITS = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}

R = {
    r.id: r
    for r in (
        Rule("NATS-001", "high", "TLS on the client port",
             "clients connect without TLS", "add a tls { cert_file, key_file, ca_file, verify_and_map: true } block"),
        Rule("NATS-002", "high", "Authentication on",
             "no client authentication: no verified client certificates, users, tokens, accounts or operator",
             "tls { verify_and_map: true } with one user per certificate, or an operator/accounts setup"),
        Rule("NATS-003", "medium", "Authorization on",
             "authenticated clients get full access: no user permissions and no accounts",
             "an authorization { users = [{user, permissions}] } block (eventward nats up compiles it from policy)"),
        Rule("NATS-004", "high", "No plaintext secrets",
             "a password or token is stored in plaintext",
             "store a bcrypt hash (nats server passwd) or use certificates/NKeys"),
        Rule("NATS-005", "high", "TLS between servers",
             "cluster routes, gateways or leaf nodes run without TLS or without verifying the peer",
             "a tls { ... verify: true } block inside cluster, gateway and leafnodes"),
        Rule("NATS-006", "medium", "Monitoring port restricted",
             "the HTTP monitoring port listens beyond the loopback interface without TLS",
             "bind monitoring to 127.0.0.1 (http: 127.0.0.1:8222) or use https with a certificate"),
        Rule("NATS-007", "medium", "Size limits",
             f"max_payload allows messages over {MAX_PAYLOAD} bytes", f"max_payload: {MAX_PAYLOAD} or less"),
        Rule("NATS-008", "high", "No default user",
             "no_auth_user gives clients that present no credentials a user's permissions",
             "remove no_auth_user"),
        Rule("NATS-009", "high", "TLS required",
             "allow_non_tls lets clients skip TLS", "remove allow_non_tls"),
        Rule("NATS-010", "medium", "No payloads in logs",
             "trace logging writes message payloads (which may hold personal data) to the log",
             "remove trace/trace_verbose (or set them false)"),
    )
}
RULES = list(R.values())


@dataclass
class Node:
    value: Any  # str, int, bool, dict[str, Node], list[Node]
    line: int
    text: str = ""


class _Parser:
    def __init__(self, text: str, source: str, base: Path | None, depth: int) -> None:
        self.s, self.i, self.line = text, 0, 1
        self.lines = text.splitlines()
        self.source, self.base, self.depth = source, base, depth

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"{self.source} is not a NATS server configuration (line {self.line}: {what})")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip(self, newlines: bool = True) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\n":
                if not newlines:
                    return
                self.line += 1
                self.i += 1
            elif c in " \t\r" or (newlines and c in ",;"):
                self.i += 1
            elif c == "#" or self.s.startswith("//", self.i):
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def block(self, close: str) -> dict[str, Node]:
        out: dict[str, Node] = {}
        while True:
            self.skip()
            c = self.peek()
            if c == "":
                if close:
                    raise self.fail("unclosed '{'")
                return out
            if c == close:
                self.i += 1
                return out
            line = self.line
            key = self.key()
            self.skip(newlines=False)
            if key.lower() == "include":
                path = self.value()
                self.include(str(path.value), out)
                continue
            if self.peek() in (":", "="):
                self.i += 1
                self.skip(newlines=False)
            if self.peek() in ("", "\n"):
                raise self.fail(f"key {key[:40]!r} has no value")
            node = self.value()
            node.line = line
            node.text = self.lines[line - 1].strip() if line - 1 < len(self.lines) else ""
            out[key.lower()] = node

    def key(self) -> str:
        c = self.peek()
        if c in "\"'":
            return self.quoted()
        m = re.compile(r"[A-Za-z0-9_.$\-]+").match(self.s, self.i)
        if not m:
            raise self.fail(f"unexpected {c!r}")
        self.i = m.end()
        return m.group(0)

    def quoted(self) -> str:
        q = self.s[self.i]
        end = self.i + 1
        while end < len(self.s) and self.s[end] != q:
            if self.s[end] == "\n":
                raise self.fail("unterminated string")
            end += 2 if self.s[end] == "\\" and q == '"' else 1
        if end >= len(self.s):
            raise self.fail("unterminated string")
        raw = self.s[self.i : end + 1]
        self.i = end + 1
        if q == '"':
            try:
                return str(json.loads(raw))
            except ValueError:
                return raw[1:-1]
        return raw[1:-1]

    def value(self) -> Node:
        line, c = self.line, self.peek()
        if c == "{":
            self.i += 1
            return Node(self.block("}"), line)
        if c == "[":
            self.i += 1
            items: list[Node] = []
            while True:
                self.skip()
                if self.peek() == "]":
                    self.i += 1
                    return Node(items, line)
                if self.peek() == "":
                    raise self.fail("unclosed '['")
                items.append(self.value())
        if c in "\"'":
            return Node(self.quoted(), line)
        m = re.compile(r"[^\n,;}\]#]+").match(self.s, self.i)
        if not m:
            raise self.fail(f"unexpected {c!r}")
        self.i = m.end()
        return Node(_scalar(m.group(0).split("//")[0].strip()), line)

    def include(self, name: str, into: dict[str, Node]) -> None:
        if self.base is None:
            raise self.fail("include without a file to resolve it against")
        if self.depth >= 8:
            raise self.fail("includes nested too deeply")
        path = (self.base / name) if not Path(name).is_absolute() else Path(name)
        inner = _Parser(read_text(path, "NATS include file"), str(path), path.parent, self.depth + 1)
        into.update(inner.block(""))


def _scalar(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    m = re.fullmatch(r"(-?\d+)\s*([a-z]*)", low)
    if m and (not m.group(2) or m.group(2) in _UNITS):
        return int(m.group(1)) * _UNITS.get(m.group(2), 1)
    return raw


def parse(text: str, source: str, base: Path | None = None) -> dict[str, Node]:
    """The configuration as nested Nodes; ConfigError for text that is not a NATS configuration."""
    try:
        doc = _Parser(text, source, base, 0).block("")
    except RecursionError:
        raise ConfigError(f"{source} is not a NATS server configuration (nested too deeply)") from None
    if not _KNOWN & set(doc):
        raise ConfigError(f"{source} is not a NATS server configuration (no listen, port, tls, jetstream, ...)")
    return doc


def _get(block: dict[str, Node], key: str) -> Node | None:
    return block.get(key)


def _true(node: Node | None) -> bool:
    return node is not None and node.value is True


def _tls_verifies(tls: Node | None) -> bool:
    return tls is not None and isinstance(tls.value, dict) and (
        _true(tls.value.get("verify")) or _true(tls.value.get("verify_and_map"))
    )


def _loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(doc: dict[str, Node], source: str) -> list[Finding]:
    found: list[Finding] = []

    def hit(rule: str, node: Node | None, detail: str = "") -> None:
        found.append(Finding(R[rule], source, node.line if node else None, node.text if node else "", detail))

    tls = doc.get("tls")
    if tls is None or not isinstance(tls.value, dict):
        hit("NATS-001", None)
    auth = doc.get("authorization")
    auth_block = auth.value if auth is not None and isinstance(auth.value, dict) else {}
    users = auth_block.get("users")
    accounts = doc.get("accounts")
    has_users = bool(users and isinstance(users.value, list) and users.value)
    has_creds = has_users or any(k in auth_block for k in ("user", "token", "password"))
    operator = doc.get("operator") or doc.get("resolver")
    if not (_tls_verifies(tls) or has_creds or accounts is not None or operator is not None):
        hit("NATS-002", tls)
    permissioned = has_users and any(
        isinstance(u.value, dict) and "permissions" in u.value for u in users.value  # type: ignore[union-attr]
    )
    if not (permissioned or "permissions" in auth_block or accounts is not None or operator is not None):
        hit("NATS-003", auth)
    for node in _secrets(doc):
        hit("NATS-004", node)
    for name in ("cluster", "gateway", "leafnodes"):
        block = doc.get(name)
        if block is None or not isinstance(block.value, dict):
            continue
        if name == "leafnodes" and "listen" not in block.value and "port" not in block.value:
            remotes = block.value.get("remotes")  # outbound only: each remote needs its own tls
            if remotes and isinstance(remotes.value, list) and all(
                isinstance(r.value, dict) and "tls" in r.value for r in remotes.value
            ):
                continue
        if not _tls_verifies(block.value.get("tls")):
            hit("NATS-005", block, f"{name} without verified TLS")
    for key in ("http", "http_port", "monitor_port"):
        node = doc.get(key)
        if node is None:
            continue
        where = str(node.value)
        host = where.rsplit(":", 1)[0] if ":" in where else (
            str(doc["http_host"].value) if "http_host" in doc else "0.0.0.0"  # noqa: S104 - nats-server's default
        )
        if not _loopback(host):
            hit("NATS-006", node, f"monitoring on {host}")
    mp = doc.get("max_payload")
    if mp is not None and (not isinstance(mp.value, int) or mp.value > MAX_PAYLOAD):
        hit("NATS-007", mp)
    if "no_auth_user" in doc:
        hit("NATS-008", doc["no_auth_user"])
    if tls is not None and isinstance(tls.value, dict) and _true(tls.value.get("allow_non_tls")):
        hit("NATS-009", tls.value["allow_non_tls"])
    if _true(doc.get("allow_non_tls")):
        hit("NATS-009", doc["allow_non_tls"])
    for key in ("trace", "trace_verbose", "v", "vv"):
        if _true(doc.get(key)):
            hit("NATS-010", doc[key])
    return found


def _secrets(doc: dict[str, Node]) -> list[Node]:
    """Every password/token value that is not a bcrypt hash or an environment variable."""
    out: list[Node] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, n in v.items():
                if k in ("password", "pass", "token", "auth_token") and isinstance(n.value, str | int):
                    s = str(n.value)
                    if not (s.startswith("$2a$") or s.startswith("$2b$") or s.startswith("$")):
                        out.append(n)
                walk(n.value)
        elif isinstance(v, list):
            for n in v:
                walk(n.value)

    walk(doc)
    return out


def check_file(path: Path) -> list[Finding]:
    text = read_text(path, "NATS server configuration")
    return check_config(parse(text, str(path), path.parent), str(path))


# --- a live server ---------------------------------------------------------------------------------

def display_url(url: str) -> str:
    """``url`` without user:password@ (it goes into findings, SARIF and error messages)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))[:200]


def fetch_varz(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """``/varz`` of a live server's monitoring port (``http://127.0.0.1:8222``)."""
    if not re.match(r"https?://", url):
        raise ConfigError(f"monitoring URL must be http:// or https://, got {display_url(url)[:80]!r}")
    full = url.rstrip("/") + ("" if url.rstrip("/").endswith("/varz") else "/varz")
    shown = display_url(full)
    request = urllib.request.Request(shown)  # noqa: S310 - scheme checked above
    parts = urllib.parse.urlsplit(full)
    if parts.username is not None:  # a proxy in front of the monitoring port may want basic auth
        userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(userinfo.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            body = resp.read(MAX_PAYLOAD)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or type(e).__name__
        raise TransportUnavailable(f"cannot read {shown}: {reason}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise ConfigError(f"{shown} did not answer with NATS /varz JSON") from None
    if not isinstance(doc, dict) or "server_id" not in doc:
        raise ConfigError(f"{shown} did not answer with NATS /varz JSON (no server_id)")
    return doc


def check_varz(varz: dict[str, Any], source: str) -> list[Finding]:
    found: list[Finding] = []

    def hit(rule: str, field: str, detail: str = "") -> None:
        found.append(Finding(R[rule], source, None, f"{field}={json.dumps(varz.get(field))}", detail))

    if not varz.get("tls_required"):
        hit("NATS-001", "tls_required")
    if not varz.get("auth_required") and not varz.get("tls_verify"):
        hit("NATS-002", "auth_required")
    cluster = varz.get("cluster") or {}
    if isinstance(cluster, dict) and cluster.get("port") and not cluster.get("tls_required"):
        found.append(Finding(R["NATS-005"], source, None, "cluster.tls_required=false"))
    for name in ("gateway", "leaf"):
        block = varz.get(name) or {}
        if isinstance(block, dict) and block.get("port") and not block.get("tls_required"):
            found.append(Finding(R["NATS-005"], source, None, f"{name}.tls_required=false"))
    if varz.get("http_port") and not _loopback(str(varz.get("http_host") or "0.0.0.0")):  # noqa: S104
        hit("NATS-006", "http_host")
    if isinstance(varz.get("max_payload"), int) and varz["max_payload"] > MAX_PAYLOAD:
        hit("NATS-007", "max_payload")
    return found
