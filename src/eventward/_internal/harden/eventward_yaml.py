"""eventward's own ``eventward.yaml`` against the checklist: the broker connection it opens
must be encrypted and authenticated, certificate checks stay on, limits stay bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eventward._internal.config import Config
from eventward._internal.harden.findings import Finding, Rule, read_text

MAX_EVENT_BYTES = 8 * 1024 * 1024
MAX_FRESHNESS_S = 7 * 24 * 3600.0
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

R = {
    r.id: r
    for r in (
        Rule("EW-001", "high", "Encrypted broker connection",
             "the transport connects to its broker without TLS",
             "kafka.security_protocol: SSL (or SASL_SSL); NATS servers as tls:// with nats.ca set"),
        Rule("EW-002", "high", "Authenticated broker connection",
             "the transport presents no credentials (no client certificate, creds file or user)",
             "set kafka.ssl_cert/ssl_key, or nats.cert/key (eventward nats cert PRINCIPAL) or nats.creds"),
        Rule("EW-003", "high", "Certificate verification on",
             "kafka.extra turns off certificate or host name verification",
             "remove enable.ssl.certificate.verification / ssl.endpoint.identification.algorithm from kafka.extra"),
        Rule("EW-004", "low", "Size limits",
             f"max_event_bytes allows events over {MAX_EVENT_BYTES} bytes",
             f"max_event_bytes: {MAX_EVENT_BYTES} or less (the default is 1 MiB)"),
        Rule("EW-005", "low", "Bounded replay window",
             "consumer.freshness_s accepts events older than 7 days as fresh, widening the replay window",
             "consumer.freshness_s: 604800 or less (the default is one day)"),
        Rule("EW-006", "medium", "CA key in the KMS",
             "a KMS holds the KEKs but the deployment CA's key is a file in the home: a copy of the home "
             "can mint a certificate for any principal",
             "pki: {ca_key: {backend: <the kms.backend>}} (its section is reused from kms), then "
             "'eventward pki init' in a new home creates the CA key inside the token/KMS"),
    )
}
RULES = list(R.values())


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key, by its path."""
    out: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return out

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = (*path, str(k.value))
                out[p] = k.start_mark.line + 1
                walk(v, p)

    walk(root, ())
    return out


def check_text(text: str, source: str) -> list[Finding]:
    cfg = Config.parse(text, Path(source).name)  # ConfigError for anything that is not one
    lines = _lines(text)
    src_lines = text.splitlines()
    found: list[Finding] = []

    def hit(rule: str, *path: str, detail: str = "") -> None:
        line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
        snippet = src_lines[line - 1].strip() if line else ""
        found.append(Finding(R[rule], source, line, snippet, detail))

    if cfg.transport == "kafka":
        k = cfg.kafka
        if k.security_protocol.upper() in ("PLAINTEXT", "SASL_PLAINTEXT"):
            hit("EW-001", "kafka", "security_protocol", detail=f"security_protocol {k.security_protocol}")
        if k.security_protocol.upper() == "SSL" and not (k.ssl_cert and k.ssl_key):
            hit("EW-002", "kafka", "ssl_cert", detail="SSL without a client certificate")
        if k.security_protocol.upper() == "PLAINTEXT":
            hit("EW-002", "kafka", "security_protocol", detail="no SASL and no client certificate")
        extra = {str(a).lower(): str(b).lower() for a, b in k.extra.items()}
        if extra.get("enable.ssl.certificate.verification") == "false" or (
            "ssl.endpoint.identification.algorithm" in extra
            and extra["ssl.endpoint.identification.algorithm"] in ("", "none")
        ):
            hit("EW-003", "kafka", "extra")
    if cfg.transport == "nats":
        n = cfg.nats
        plain = [s for s in n.servers if not s.startswith("tls://")]
        if plain and not n.ca:
            hit("EW-001", "nats", "servers", detail=f"{len(plain)} server URL(s) without TLS")
        if not ((n.cert and n.key) or n.creds or n.user):
            hit("EW-002", "nats")
    if cfg.max_event_bytes > MAX_EVENT_BYTES:
        hit("EW-004", "max_event_bytes")
    if cfg.consumer.freshness_s > MAX_FRESHNESS_S:
        hit("EW-005", "consumer", "freshness_s")
    kms = str(cfg.kms.get("backend", "local"))
    if kms != "local" and cfg.pki.ca_key.backend == "file":
        where = ("pki", "ca_key", "backend") if ("pki",) in lines else ("kms", "backend")
        hit("EW-006", *where, detail=f"kms.backend {kms}, CA key a 0600 file")
    return found


def check_file(path: Path) -> list[Finding]:
    return check_text(read_text(path, "eventward.yaml"), str(path))
