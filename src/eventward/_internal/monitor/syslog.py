"""SIEM export as syslog: RFC 5424 messages carrying the OCSF event, to a file, stdout or a
collector over UDP (RFC 5426) or TCP with octet counting (RFC 6587).

Each message: PRI from the OCSF severity (facility ``log audit``, 13, unless told otherwise),
VERSION 1, the record's time (UTC, milliseconds), HOSTNAME, APP-NAME ``eventward``, PROCID,
MSGID the audit action (``Publish``, ``key.forget``, ``monitor.alert``, ...), STRUCTURED-DATA
with the OCSF class and the fields a collector filters on (PARAM-VALUEs escaped as RFC 5424
§6.3.3 requires), and MSG the OCSF JSON (UTF-8, with the BOM the RFC asks for). The content is
the OCSF export's, which is the audit log's: metadata only. The mapping is in docs/monitoring.md.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from eventward._internal.monitor.ocsf import DETECTION_FINDING, OCSF_VERSION
from eventward._internal.monitor.rules import ALERT_ACTION
from eventward.errors import ConfigError, TransportUnavailable

# RFC 5612's documentation enterprise number: eventward has no IANA private enterprise number,
# and RFC 5424 §7.2.2 wants one in every SD-ID that is not IANA-registered.
SD_ID = "eventward@32473"
APP_NAME = "eventward"
LOG_AUDIT = 13  # RFC 5424 facility 13, "log audit"
BOM = b"\xef\xbb\xbf"
NIL = "-"
MAX_UDP = 65_507  # the largest UDP payload over IPv4
# OCSF severity_id -> syslog severity: 1 Informational -> 6, 2 Low -> 5 Notice, 3 Medium -> 4
# Warning, 4 High -> 3 Error, 5 Critical -> 2, 6 Fatal -> 1 Alert; Unknown/Other -> 5 Notice.
SEVERITY = {1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1}
_PRINTUSASCII = re.compile(r"[\x21-\x7e]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SD_ESCAPE = re.compile(r'(["\\\]])')


def escape_param(value: str) -> str:
    """A PARAM-VALUE: ``"``, ``\\`` and ``]`` escaped with a backslash (RFC 5424 §6.3.3).

    Control characters, which audit records never hold, become U+FFFD rather than pass: a line
    break would split a message in a line-oriented file or stdout stream."""
    return _SD_ESCAPE.sub(r"\\\1", _CONTROL.sub("\ufffd", value))


def _header_field(value: str, limit: int) -> str:
    """HOSTNAME, APP-NAME, PROCID or MSGID: 1..limit printable US-ASCII, else NILVALUE."""
    value = value[:limit]
    return value if value and _PRINTUSASCII.match(value) else NIL


def _timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Formatter:
    """OCSF documents as RFC 5424 messages from this host and process."""

    def __init__(self, *, facility: int = LOG_AUDIT, hostname: str | None = None, procid: str | None = None) -> None:
        if not 0 <= facility <= 23:
            raise ConfigError("a syslog facility is 0..23 (13 is log audit)")
        self.facility = facility
        self.hostname = _header_field(socket.gethostname() if hostname is None else hostname, 255)
        self.procid = _header_field(str(os.getpid()) if procid is None else procid, 128)

    def message(self, doc: Mapping[str, Any]) -> bytes:
        """One OCSF event (``ocsf.to_ocsf``) as one RFC 5424 message, without framing."""
        finding = doc.get("class_uid") == DETECTION_FINDING
        action = ALERT_ACTION if finding else str(doc.get("api", {}).get("operation", ""))
        severity = SEVERITY.get(int(doc.get("severity_id", 0)), 5)
        header = " ".join((
            f"<{self.facility * 8 + severity}>1",
            _timestamp(int(doc["time"])),
            self.hostname,
            APP_NAME,
            self.procid,
            _header_field(action, 32),
        ))
        return f"{header} {self._structured(doc, finding, action)} ".encode() + BOM + orjson.dumps(doc)

    @staticmethod
    def _structured(doc: Mapping[str, Any], finding: bool, action: str) -> str:
        meta = doc.get("metadata", {})
        params: list[tuple[str, object]] = [
            ("class_uid", doc.get("class_uid")),
            ("type_uid", doc.get("type_uid")),
            ("severity_id", doc.get("severity_id")),
            ("uid", meta.get("uid")),
            ("ocsf_version", meta.get("version", OCSF_VERSION)),
            ("action", action),
        ]
        resources = doc.get("resources") or [{}]
        resource = resources[0]
        name = f"{resource['type']}::{resource['name']}" if "type" in resource else resource.get("name")
        if finding:
            info = doc.get("finding_info", {})
            trigger = doc.get("unmapped", {}).get("trigger")
            params += [("rule", info.get("title")), ("resource", name), ("trigger", trigger)]
        else:
            params += [
                ("index", meta.get("sequence")),
                ("actor", doc.get("actor", {}).get("user", {}).get("name")),
                ("resource", name),
                ("status", doc.get("status")),
                ("reason", doc.get("status_detail")),
            ]
        body = " ".join(f'{k}="{escape_param(str(v))}"' for k, v in params if v is not None and v != "")
        return f"[{SD_ID} {body}][origin software=\"{APP_NAME}\"]"


class Collector:
    """A syslog collector at ``udp://HOST:PORT`` (RFC 5426: one message per datagram) or
    ``tcp://HOST:PORT`` (RFC 6587 octet counting: ``LEN SP MSG``). Failures are TransportUnavailable."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError("a syslog collector is udp://HOST:PORT or tcp://HOST:PORT") from None
        if parts.scheme not in ("udp", "tcp") or not parts.hostname or port is None or parts.path not in ("", "/") \
                or parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError("a syslog collector is udp://HOST:PORT or tcp://HOST:PORT")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, port
        self._timeout = timeout
        self._sock: socket.socket | None = None

    def connect(self) -> Collector:
        """Open the socket (separate from parsing, so a refused command connects nowhere)."""
        kind = socket.SOCK_DGRAM if self.scheme == "udp" else socket.SOCK_STREAM
        try:
            family, _, _, _, addr = socket.getaddrinfo(self.host, self.port, type=kind)[0]
            sock = socket.socket(family, kind)
            sock.settimeout(self._timeout)
            try:
                sock.connect(addr)  # UDP too: a refused port is then reported by a later send
            except OSError:
                sock.close()
                raise
        except OSError as e:
            raise TransportUnavailable(
                f"cannot reach the syslog collector {self._where()} ({type(e).__name__})"
            ) from None
        self._sock = sock
        return self

    def _where(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def send(self, message: bytes) -> None:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            if self.scheme == "udp":
                self._sock.send(message[:MAX_UDP])  # RFC 5426 §3.2: a datagram may carry a truncated message
            else:
                self._sock.sendall(b"%d %s" % (len(message), message))
        except OSError as e:
            raise TransportUnavailable(f"syslog collector {self._where()} failed ({type(e).__name__})") from None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with suppress(OSError):
            if self.scheme == "tcp":
                sock.shutdown(socket.SHUT_WR)  # the collector sees a clean end of stream
        sock.close()
