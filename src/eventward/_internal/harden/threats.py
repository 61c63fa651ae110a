"""``eventward threats``: the STRIDE table of the deployment as configured.

Each row names a threat, what covers it here (with the setting that does it) and what stays
open, so an operator sees the gaps their configuration leaves (``transport embedded: no
broker ACLs``) instead of the design's promises. Only configuration and the home's files are
read; nothing is decrypted and no secret is shown.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventward._internal.casigner import ca_key_config, describe
from eventward._internal.config import Config
from eventward._internal.home import Home


@dataclass
class Threat:
    id: str
    category: str
    threat: str
    covered: list[str] = field(default_factory=list)
    open: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "threat": self.threat, "covered_by": self.covered,
                "open": self.open}


def _suites(home: Home | None, cfg: Config | None = None) -> dict[str, int]:
    """Active seal keys per suite, read-only from the trust registry (no keys, only counts)."""
    if home is not None and cfg is not None and cfg.store.backend == "postgres":
        from eventward._internal.client.trust import active_suites_in_database

        return active_suites_in_database(home)
    if home is None or not home.trust_db.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{home.trust_db}?mode=ro", uri=True)
        try:
            cols = {r[1] for r in db.execute("PRAGMA table_info(keys)")}
            if "mldsa" not in cols:
                rows = db.execute("SELECT 'ed25519', COUNT(*) FROM keys WHERE status = 'active'").fetchall()
            else:
                rows = db.execute(
                    "SELECT CASE WHEN mldsa IS NULL THEN 'ed25519' ELSE 'ed25519+ml-dsa-65' END, COUNT(*) "
                    "FROM keys WHERE status = 'active' GROUP BY 1"
                ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    return {str(s): int(n) for s, n in rows if n}


def _transport(cfg: Config) -> tuple[bool, bool, str]:
    """(encrypted, client-authenticated, how) of the broker connection."""
    if cfg.transport == "nats":
        n = cfg.nats
        tls = bool(n.ca) or all(s.startswith("tls://") for s in n.servers)
        auth = bool((n.cert and n.key) or n.creds or n.user)
        how = "mTLS (nats.ca, nats.cert)" if tls and n.cert else ("TLS (nats.ca)" if tls else "none")
        return tls, auth, how
    if cfg.transport == "kafka":
        proto = cfg.kafka.security_protocol.upper()
        tls = proto in ("SSL", "SASL_SSL")
        auth = proto.startswith("SASL") or bool(cfg.kafka.ssl_cert)
        return tls, auth, f"kafka.security_protocol: {proto}"
    return False, False, "embedded"


def report(cfg: Config, home: Home | None = None) -> list[Threat]:
    embedded = cfg.transport == "embedded"
    tls, client_auth, how = _transport(cfg)
    hybrid = cfg.seals.require_hybrid
    suites = _suites(home, cfg)
    kms = str(cfg.kms.get("backend", "local"))
    rows: list[Threat] = []

    s1 = Threat("S1", "Spoofing", "a rogue producer publishes events in a service's name",
                ["every batch sealed and verified against the trust registry (seal suites in use: "
                 + (", ".join(f"{k} x{v}" for k, v in sorted(suites.items())) or "none registered yet") + ")",
                 "a valid seal is not a permission: the sealer must hold Publish on the topic (policy)"])
    if hybrid:
        s1.covered.append(f"hybrid Ed25519 + ML-DSA-65 seals required on: {', '.join(hybrid)} (seals.require_hybrid)")
    else:
        s1.open.append(
            "Ed25519-only seals accepted everywhere: no post-quantum protection (seals.require_hybrid is empty)"
        )
    rows.append(s1)

    s2 = Threat("S2", "Spoofing", "a client impersonates a service at the broker")
    if embedded:
        s2.covered.append("no network listener: the log is a file in the home (directory mode 0700)")
        s2.open.append("transport embedded: no broker authentication; any process that can write the home can "
                       "append (forgeries are refused by seal verification, not prevented)")
    elif client_auth:
        s2.covered.append(f"client credentials at the broker ({how})")
    else:
        s2.open.append(f"transport {cfg.transport}: the broker connection presents no client credentials ({how})")
    ca_key = ca_key_config(cfg.pki, cfg.kms)
    if ca_key.backend == "file":
        s2.open.append("pki.ca_key.backend: file: the CA key is a 0600 file in the home; a copy of the home can "
                       "mint a certificate for any principal")
    else:
        s2.covered.append(f"client certificates from the deployment CA, whose key never leaves {describe(ca_key)} "
                          f"(pki.ca_key.backend: {ca_key.backend})")
    rows.append(s2)

    t1 = Threat("T1", "Tampering", "events altered in transit")
    t1.covered.append("seals over the exact stored bytes: any change is refused by consumers")
    if embedded:
        t1.covered.append("transport embedded: no network hop")
    elif tls:
        t1.covered.append(f"TLS to the broker ({how})")
    else:
        t1.open.append(f"transport {cfg.transport} without TLS ({how}): changes are detected, not prevented")
    rows.append(t1)

    rows.append(Threat(
        "T2", "Tampering", "events or audit records altered or deleted at rest",
        ["seals (Merkle root per batch) over the exact stored bytes",
         "hash-chained, Merkle-proved audit log with signed checkpoints (eventward audit verify)"],
        ["tampering is detected, not prevented: whoever can write the log can delete whole batches "
         "(consumers report sequence gaps)"]
        + (["transport embedded: no broker replication; one disk holds the only copy"] if embedded else []),
    ))
    rows.append(Threat(
        "R1", "Repudiation", "a producer denies having sent an event; an operator denies an action",
        ["seals are asymmetric signatures bound to the producer principal (trust registry)",
         "every security decision is in the audit log with inclusion proofs"],
        ["the audit signing key lives in the home next to the log: cosign checkpoints with an "
         "external witness (eventward witness) so a rewritten log is noticed"],
    ))

    i1 = Threat("I1", "Information disclosure", "a consumer or operator reads fields it is not cleared for",
                ["sensitive fields encrypted per data subject (AES-256-GCM) under class KEKs "
                 f"(kms.backend: {kms})", "deny-by-default policy per topic, event type and sensitivity class"])
    if kms == "local":
        i1.open.append("kms.backend: local: the KEKs sit in the home's keyring; a copy of the home (and its "
                       "passphrase, if set) opens every field")
    i1.open.append("routing fields (type, source, time, producer) stay plaintext by design")
    rows.append(i1)

    i2 = Threat("I2", "Information disclosure", "traffic read on the network")
    if embedded:
        i2.covered.append("transport embedded: nothing crosses the network")
    elif tls:
        i2.covered.append(f"TLS to the broker ({how})")
    else:
        i2.open.append(f"transport {cfg.transport} without TLS: routing fields and metadata readable on the wire")
    rows.append(i2)

    d1 = Threat("D1", "Denial of service", "floods and oversize events",
                [f"events over max_event_bytes ({cfg.max_event_bytes}) refused",
                 f"bounded batches (producer.batch_max: {cfg.producer.batch_max}) and bounded consumer memory"])
    if embedded:
        d1.open.append("transport embedded: no broker quotas; a local writer can fill the disk")
    elif cfg.transport == "nats":
        d1.open.append("per-account JetStream limits are the server's (check it: eventward harden check --nats)")
    else:
        d1.open.append("Kafka quotas are dynamic broker configuration (kafka-configs): not visible here")
    rows.append(d1)

    e1 = Threat("E1", "Elevation of privilege", "a reader gains write access; schema or policy poisoning",
                ["control-plane actions are separate permissions (manage_policy, approve_schema, rotate_keys)",
                 "schema changes need approval and a security-regression check"])
    if embedded:
        e1.open.append("transport embedded: no broker ACLs; the policy is enforced by the SDK, CLI and gateway, "
                       "so a process with file access bypasses it (seals and field encryption still hold)")
    elif cfg.transport == "nats":
        e1.covered.append("broker permissions compiled from the policy when the servers run eventward's "
                          "authorization (eventward nats up)")
        e1.open.append("a NATS server not started by eventward nats up has only the ACLs it was given: "
                       "verify with eventward harden check --nats")
    else:
        e1.open.append("Kafka ACLs come from eventward policy compile --kafka only once applied, and only with "
                       "an authorizer on the brokers (eventward harden check --kafka)")
    rows.append(e1)
    return rows


def deployment(cfg: Config, source: Path | None) -> dict[str, Any]:
    return {
        "config": str(source) if source is not None else None,
        "transport": cfg.transport,
        "kms_backend": str(cfg.kms.get("backend", "local")),
        "ca_key_backend": ca_key_config(cfg.pki, cfg.kms).backend,
        "require_hybrid": list(cfg.seals.require_hybrid),
    }
