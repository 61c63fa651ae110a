"""SIEM export as RFC 5424 syslog: every message emitted (to a file, to a UDP collector per RFC 5426,
to a TCP collector with RFC 6587 octet counting) is parsed by a strict RFC 5424 parser written here
from the RFC's ABNF; PARAM-VALUE escaping of ``"``, ``\\`` and ``]`` holds for any text; MSG is the
OCSF event, still valid against its class; nothing identifying a data subject is in any output."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.audit.records import AuditRecord, format_time
from eventward._internal.monitor import syslog
from eventward._internal.monitor.ocsf import api_activity, detection_finding
from eventward._internal.monitor.rules import Alert
from eventward.errors import ConfigError, TransportUnavailable

from .test_monitor_ocsf_cli import _ew, validate
from .world import make_home

SUBJECT = "customer-42@example.org"

# --- a strict RFC 5424 parser (section 6, ABNF) -------------------------------------------------
_PRI = re.compile(rb"<(0|[1-9][0-9]{0,2})>([1-9][0-9]{0,2})\Z")
_TS = re.compile(rb"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
                 rb"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)\Z")
_PRINT = re.compile(rb"[\x21-\x7e]+\Z")
_SD_NAME = re.compile(rb"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}")  # PRINTUSASCII except = SP ] "
_IANA_SD_IDS = {"timeQuality", "origin", "meta"}
BOM = b"\xef\xbb\xbf"


class Malformed(AssertionError):
    pass


@dataclass
class Message:
    facility: int
    severity: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: str | None


def _need(ok: object, why: str) -> None:
    if not ok:
        raise Malformed(why)


def _field(raw: bytes, limit: int, what: str) -> str:
    _need(raw == b"-" or (len(raw) <= limit and _PRINT.match(raw)), f"{what} is not 1..{limit} PRINTUSASCII or -")
    return raw.decode("ascii")


def parse(data: bytes) -> Message:
    """One SYSLOG-MSG, strictly: HEADER SP STRUCTURED-DATA [SP MSG]."""
    parts = data.split(b" ", 6)
    _need(len(parts) == 7, "header has fewer than 7 fields")
    pri_ver, ts, host, app, procid, msgid, rest = parts
    m = _PRI.match(pri_ver)
    _need(m and int(m.group(1)) <= 191 and m.group(2) == b"1", "PRI/VERSION")
    prival = int(m.group(1))  # type: ignore[union-attr]
    _need(ts == b"-" or _TS.match(ts), "TIMESTAMP")
    out = Message(prival // 8, prival % 8, ts.decode(), _field(host, 255, "HOSTNAME"), _field(app, 48, "APP-NAME"),
                  _field(procid, 128, "PROCID"), _field(msgid, 32, "MSGID"), {}, None)
    i = 0
    if rest[:1] == b"-":
        i = 1
    else:
        while rest[i:i + 1] == b"[":
            m2 = _SD_NAME.match(rest, i + 1)
            _need(m2, "SD-ID")
            sd_id = m2.group().decode()  # type: ignore[union-attr]
            _need(sd_id not in out.sd, "an SD-ID appears twice")
            _need(sd_id in _IANA_SD_IDS or re.fullmatch(r"[^@]+@[0-9]+(\.[0-9]+)*", sd_id), "SD-ID needs @PEN")
            i = m2.end()  # type: ignore[union-attr]
            params: dict[str, str] = {}
            while rest[i:i + 1] == b" ":
                m3 = _SD_NAME.match(rest, i + 1)
                _need(m3, "PARAM-NAME")
                i = m3.end()  # type: ignore[union-attr]
                _need(rest[i:i + 2] == b'="', 'PARAM-NAME "=" %d34')
                i += 2
                value = bytearray()
                while True:
                    c = rest[i:i + 1]
                    _need(c, "PARAM-VALUE not terminated")
                    if c == b"\\" and rest[i + 1:i + 2] in (b'"', b"\\", b"]"):
                        value += rest[i + 1:i + 2]
                        i += 2
                    elif c == b'"':
                        i += 1
                        break
                    else:
                        _need(c != b"]", "']' in a PARAM-VALUE must be escaped")
                        value += c
                        i += 1
                try:
                    params[m3.group().decode()] = value.decode("utf-8")  # type: ignore[union-attr]
                except UnicodeDecodeError:
                    raise Malformed("PARAM-VALUE is not UTF-8") from None
            _need(rest[i:i + 1] == b"]", "SD-ELEMENT not closed")
            i += 1
            out.sd[sd_id] = params
        _need(out.sd, "STRUCTURED-DATA is neither - nor an SD-ELEMENT")
    if i < len(rest):
        _need(rest[i:i + 1] == b" ", "SP before MSG")
        body = rest[i + 1:]
        if body.startswith(BOM):
            try:
                out.msg = body[len(BOM):].decode("utf-8")
            except UnicodeDecodeError:
                raise Malformed("MSG-UTF8 is not UTF-8") from None
        else:
            out.msg = body.decode("latin-1")
    return out


def octet_frames(stream: bytes) -> list[bytes]:
    """RFC 6587 §3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG, MSG-LEN = NONZERO-DIGIT *DIGIT."""
    frames, i = [], 0
    while i < len(stream):
        m = re.compile(rb"([1-9][0-9]{0,8}) ").match(stream, i)
        _need(m, "octet count")
        n = int(m.group(1))  # type: ignore[union-attr]
        start = m.end()  # type: ignore[union-attr]
        _need(start + n <= len(stream), "frame shorter than its count")
        frames.append(stream[start:start + n])
        i = start + n
    return frames


# --- the parser itself is strict ---------------------------------------------------------------
def _rec(reason: str = "", resource: str = "Topic::orders", principal: str = "orders-svc", **meta) -> AuditRecord:
    return AuditRecord(7, format_time(1_800_000_000.5), principal, "Publish", resource, "error", reason, meta)


FMT = syslog.Formatter(hostname="ew-host.example", procid="4242")


def test_a_message_parses_with_every_header_field() -> None:
    m = parse(FMT.message(api_activity(_rec("bad_signature", count=3))))
    assert (m.facility, m.severity) == (13, 5)  # log audit; OCSF Low -> Notice
    assert m.timestamp == "2027-01-15T08:00:00.500Z" and m.hostname == "ew-host.example"
    assert (m.app, m.procid, m.msgid) == ("eventward", "4242", "Publish")
    p = m.sd[syslog.SD_ID]
    assert p["class_uid"] == "6003" and p["reason"] == "bad_signature" and p["resource"] == "Topic::orders"
    assert m.sd["origin"] == {"software": "eventward"}
    doc = json.loads(m.msg or "")
    validate(doc)
    assert doc == json.loads(json.dumps(api_activity(_rec("bad_signature", count=3))))


def test_alerts_map_to_severity_and_msgid() -> None:
    for sev, want in (("low", 5), ("medium", 4), ("high", 3), ("critical", 2)):
        doc = detection_finding(Alert("denial_burst", sev, 1_800_000_000.0, "Topic::orders", "burst", 12, {}), 40)
        m = parse(FMT.message(doc))
        assert m.severity == want and m.msgid == "monitor.alert"
        assert m.sd[syslog.SD_ID]["rule"] == "denial_burst" and m.sd[syslog.SD_ID]["class_uid"] == "2004"
        validate(json.loads(m.msg or ""))


@pytest.mark.parametrize("bad", [
    b'<13>1 2027-01-15T08:00:00Z h a p m [x@1 a="]"]',  # unescaped ]
    b'<13>1 2027-01-15T08:00:00Z h a p m [x a="1"]',  # SD-ID without an enterprise number
    b'<192>1 2027-01-15T08:00:00Z h a p m -',  # PRI out of range
    b'<13>2 2027-01-15T08:00:00Z h a p m -',  # version
    b'<13>1 2027-01-15 08:00:00Z h a p m -',  # timestamp
    b'<13>1 - h a p 012345678901234567890123456789012 -',  # MSGID over 32
    b'<13>1 - h a p m [x@1 a="1"][x@1 b="2"]',  # an SD-ID twice
    b'<13>1 - h a p m [x@1 a="1"',  # not closed
    b'<13>1 - h a p m -x',  # no SP before MSG
])
def test_the_parser_refuses_malformed_messages(bad: bytes) -> None:
    with pytest.raises(Malformed):
        parse(bad)


def _unescape_free(s: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", "\ufffd", s)


TRICKY = st.text(alphabet=st.one_of(st.sampled_from('"]\\[= '), st.characters(exclude_categories=("Cs",))),
                 max_size=60)


@settings(max_examples=300, deadline=None)
@given(TRICKY)
def test_escape_param_round_trips_through_the_parser(value: str) -> None:
    escaped = syslog.escape_param(value)
    assert re.search(r'(?<!\\)(\\\\)*["\]]', escaped) is None  # every " and ] is escaped
    m = parse(f'<13>1 - - - - - [x@32473 v="{escaped}"]'.encode())
    assert m.sd["x@32473"]["v"] == _unescape_free(value)


@settings(max_examples=150, deadline=None)
@given(reason=TRICKY, name=TRICKY, principal=TRICKY)
def test_any_record_text_survives_as_param_values_and_msg(reason: str, name: str, principal: str) -> None:
    doc = api_activity(_rec(reason, f"Topic::{name}", principal or "p"))
    m = parse(FMT.message(doc))
    p = m.sd[syslog.SD_ID]
    assert p.get("reason", "") == _unescape_free(reason)
    assert p["actor"] == _unescape_free(principal or "p")
    assert json.loads(m.msg or "") == json.loads(json.dumps(doc))  # MSG is the OCSF event, intact
    assert "\n" not in (m.msg or "") and b"\n" not in FMT.message(doc)  # one message per line in files


def test_collector_urls_are_checked() -> None:
    for bad in ("syslog.example:514", "http://h:514", "udp://h", "tcp://:514", "udp://h:514/x", "tcp://h:99999",
                "udp://u:p@h:514"):
        with pytest.raises(ConfigError):
            syslog.Collector(bad)
    with pytest.raises(ConfigError):
        syslog.Formatter(facility=24)


def test_an_unreachable_tcp_collector_is_a_typed_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(TransportUnavailable):
        syslog.Collector(f"tcp://127.0.0.1:{port}").connect()


# --- end to end: the CLI to a file, a UDP and a TCP listener -------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eventward.errors import AccessDenied

    root = tmp_path_factory.mktemp("mon-syslog")
    dep = make_home(root)
    with dep.producer("orders-svc", "orders") as p:
        for i in range(3):
            p.send("Order", {"order_id": f"ord-{i}", "amount": i})
    with dep.producer("rogue-svc", "orders") as p:
        p.send("Order", {"order_id": "ord-x", "amount": 1})
    for _ in range(22):  # a denial burst (default threshold 20)
        with pytest.raises(AccessDenied), dep.producer("mallory", "orders") as p:
            p.send("Order", {"order_id": "ord-m", "amount": 1})
    dep.forget(SUBJECT, principal="admin", reason="gdpr-art17")
    dep.close()
    home = root / "home"
    assert _ew(home, "monitor", "--record", "--json").returncode == 1  # alerts recorded as monitor.alert
    return home


def _check_messages(raw: list[bytes]) -> list[Message]:
    msgs = [parse(r) for r in raw]
    assert len(msgs) > 30
    for m in msgs:
        assert m.app == "eventward" and m.facility == 13 and m.msg is not None
        doc = json.loads(m.msg)
        validate(doc)
        assert m.sd[syslog.SD_ID]["class_uid"] == str(doc["class_uid"])
    assert {m.msgid for m in msgs} >= {"Publish", "key.forget", "monitor.alert"}
    assert {m.severity for m in msgs} >= {6, 4}  # informational (ok) and warning (denied)
    for r in raw:
        assert b"customer-42" not in r and b"example.org" not in r  # the subject only as its keyed hash
        assert b"ord-" not in r  # no payload
    return msgs


def test_syslog_format_to_a_file(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.syslog"
    r = _ew(home, "siem", "--format", "syslog", "--to", str(out))
    assert r.returncode == 0, r.stderr
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    msgs = _check_messages(lines[:-1])
    ocsf = tmp_path / "audit.jsonl"
    assert _ew(home, "siem", "--to", str(ocsf)).returncode == 0
    assert [json.loads(m.msg or "") for m in msgs] == [json.loads(x) for x in ocsf.read_text().splitlines()]


class _Listener:
    """A syslog collector on 127.0.0.1: UDP datagrams or one TCP connection read to its end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sock = socket.socket(type=socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        if kind == "udp":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        else:
            self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        self.stream = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.kind == "udp":
                while not self.done.is_set():
                    try:
                        self.got.append(self.sock.recv(65535))
                    except TimeoutError:
                        return
            else:
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(10)
                    while chunk := conn.recv(65536):
                        self.stream += chunk
                self.done.set()
        finally:
            self.sock.close()


def test_syslog_to_udp_and_tcp_collectors(home: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref.jsonl"
    assert _ew(home, "siem", "--to", str(ref)).returncode == 0
    n = len(ref.read_text().splitlines())
    for kind in ("udp", "tcp"):
        lst = _Listener(kind)
        r = _ew(home, "siem", "--syslog", f"{kind}://127.0.0.1:{lst.port}")
        assert r.returncode == 0, r.stderr
        assert r.stdout == ""  # with --syslog and no --to, nothing goes to stdout
        if kind == "tcp":
            lst.thread.join(10)
            assert lst.done.is_set()  # the exporter closed the connection after its last frame
            raw = octet_frames(lst.stream)
        else:
            deadline = time.monotonic() + 10
            while len(lst.got) < n and time.monotonic() < deadline:
                time.sleep(0.01)
            lst.done.set()
            raw = list(lst.got)
        msgs = _check_messages(raw)
        assert len(msgs) == n, kind  # every record, once (one per datagram / per frame)
        assert [json.loads(m.msg or "") for m in msgs] == [json.loads(x) for x in ref.read_text().splitlines()]


def test_bad_targets_fail_typed_before_reading(home: Path) -> None:
    assert _ew(home, "siem", "--syslog", "udp://nowhere").returncode == 9  # configuration
    assert _ew(home, "siem", "--format", "cef").returncode == 5  # invalid input
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert _ew(home, "siem", "--syslog", f"tcp://127.0.0.1:{port}").returncode == 6  # unavailable


def test_attack_reader_without_read_audit_sends_nothing_to_the_collector(home: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        r = _ew(home, "siem", "--syslog", f"tcp://127.0.0.1:{sock.getsockname()[1]}", "--as", "shipping")
        assert r.returncode == 3, r.stderr  # forbidden
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection is waiting: the exporter never connected
            sock.accept()
    finally:
        sock.close()
