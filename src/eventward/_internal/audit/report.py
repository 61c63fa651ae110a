"""The regulator's erasure report: what a data-protection authority asks to see, and nothing personal.

For one subject, named only by its keyed hash (the raw id is hashed by the caller and never
enters the report), the report gathers and *verifies*:

- the newest erasure certificate, its signature, the inclusion proof of its record and the
  checkpoint the proof is against, and that the live log still extends that checkpoint;
- with witnesses configured, that a checkpoint they cosigned is consistent with it;
- the KEK epoch of each class at erasure and whether that epoch has ended (every KEK version up
  to it destroyed), which decides the residual-copy statement (backups, freed pages, WAL, replicas);
- the current legal hold (code, since, placed by) and the subject's hold/forget history from the
  audit log (metadata only).

A subject with no keys, no erasure and no hold was never seen: that is a NotFoundError which does
not echo what was asked for.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from typing import Any

import orjson

from eventward._internal.audit.certificate import Certificate, find_certificate, verify_certificate
from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.note import NoteKey
from eventward._internal.audit.records import format_time
from eventward.errors import AuditIntegrityError, NotFoundError

REPORT_TYPE = "eventward.erasure-report/v1"
_HISTORY = ("key.hold", "key.release", "key.forget", "erasure.certificate")
_VERSION = re.compile(r"\.v([0-9]+)\Z")


def _epoch_status(keys: Any, epochs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for cls, epoch in sorted(epochs.items()):
        known = cls in keys.kms.classes()
        live = keys.kms.versions(cls) if known else []
        destroyed = keys.kms.destroyed(cls) if known else []
        n = int(epoch) if isinstance(epoch, int) else int(_VERSION.search(str(epoch)).group(1))  # type: ignore[union-attr]
        residual = [v for v in live if (m := _VERSION.search(v)) and int(m.group(1)) <= n]
        out.append({
            "class": cls,
            "epoch_at_erasure": f"{cls}.v{n}",
            "current": keys.kms.current(cls) if known else None,
            "destroyed": destroyed,
            "still_live_up_to_epoch": residual,
            "epoch_ended": known and not residual,
        })
    return out


def _history(log: AuditLog, subject_hash: str) -> list[dict[str, Any]]:
    """Hold, release, forget and certificate records of the subject (metadata only), oldest first."""
    resources = {f"subject:{subject_hash}", f"Subject::{subject_hash}"}
    needle = subject_hash.encode()
    out = []
    for index, _, body in log.scan():
        raw = bytes(body)
        if needle not in raw:
            continue
        rec = orjson.loads(raw)
        if rec.get("action") in _HISTORY and rec.get("resource") in resources:
            out.append({k: rec.get(k) for k in ("time", "action", "principal", "outcome", "reason")} | {"index": index})
    return out


def _residual(cert: Certificate | None, epochs: list[dict[str, Any]]) -> str:
    if cert is None:
        return "No erasure has been performed: the subject's keys exist (or are held); no residual-copy claim is made."
    if not epochs:
        return "The subject had no keys when erased: no copy of this deployment holds anything it could decrypt."
    ended = [e for e in epochs if e["epoch_ended"]]
    if len(ended) == len(epochs):
        return (
            "Residual copies (backups, freed pages, WAL, replicas) made before the erasure are cryptographically "
            "unrecoverable: every KEK version up to " + ", ".join(e["epoch_at_erasure"] for e in epochs)
            + " has been destroyed in the KMS."
        )
    pending = ", ".join(v for e in epochs for v in e["still_live_up_to_epoch"])
    return (
        "The keys were destroyed in the key store, but residual copies (backups, freed pages, WAL, replicas) "
        f"made before the erasure stay decryptable while KEK versions {pending} exist; they become unrecoverable "
        "when rotation destroys them (eventward keys rotate --class CLASS)."
    )


def erasure_report(
    dep: Any,
    subject_hash: str,
    *,
    log: AuditLog,
    witnesses: Sequence[NoteKey] = (),
    witnessed: Sequence[str] = (),
) -> dict[str, Any]:
    """The report for ``subject_hash`` (``dep`` a Deployment; ``log`` its audit log, read-gated)."""
    keys = dep.keys
    hold = keys.store.hold_info(subject_hash)
    erased = keys.store.erased(subject_hash)
    has_keys = any(keys.store.current_dek(subject_hash, c) is not None for c in keys.kms.classes())
    try:
        cert: Certificate | None = find_certificate(log, subject_hash)
    except NotFoundError:
        cert = None
    if cert is None and hold is None and not erased and not has_keys:
        raise NotFoundError("no erasure, key or legal hold is recorded for that subject")
    verifier = log.verifier
    doc: dict[str, Any] = {
        "type": REPORT_TYPE,
        "deployment": verifier.name,
        "generated_at": format_time(),
        "subject_hash": subject_hash,
        "status": "erased" if cert is not None else ("held" if hold else "not_erased"),
    }
    epochs: list[dict[str, Any]] = []
    if cert is not None:
        check = verify_certificate(cert, verifier, log=log)  # raises AuditIntegrityError if anything fails
        cosigned: list[dict[str, Any]] = []
        for text in witnessed:
            later = verify_checkpoint(text, verifier, witnesses=witnesses)
            signed = {(s.name, s.key_id) for s in later.cosignatures}
            missing = [w.name for w in witnesses if (w.name, w.key_id) not in signed]
            if missing:
                raise AuditIntegrityError("witnessed checkpoint lacks the cosignature of " + ", ".join(missing))
            verify_certificate(cert, verifier, log=log, checkpoint=text)
            cosigned.append({"size": later.size, "witnesses": [s.name for s in later.cosignatures]})
        epochs = _epoch_status(keys, dict(cert.claims.get("kek_epochs") or {}))
        doc["certificate"] = {
            "claims": dict(cert.claims),
            "record_index": cert.index,
            "inclusion_proof": cert.proof.to_dict(),
            "checkpoint": cert.checkpoint,
            "verified": {
                "signature": True,
                "inclusion_proof": True,
                "checkpoint_size": check.checkpoint_size,
                "log_size": check.log_size,
                "log_extends_checkpoint": check.log_size is not None,
                "witnessed_checkpoints": cosigned,
                "witnessed": bool(cosigned),
            },
        }
    else:
        doc["certificate"] = None
    doc["kek_epochs"] = epochs
    doc["hold"] = None if hold is None else {
        "code": hold[0],
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hold[1])),
        "placed_by": hold[2] or None,
    }
    doc["history"] = _history(log, subject_hash)
    doc["residual_copies"] = _residual(cert, epochs)
    return doc


def render_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML page of the report; every value is escaped."""
    e = html.escape

    def row(k: str, v: object) -> str:
        return f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>"

    cert = doc.get("certificate")
    parts = [
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Erasure report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}th{text-align:left;padding-right:1em}"
        "td,th{vertical-align:top;border-bottom:1px solid #ddd}pre{white-space:pre-wrap}</style></head><body>",
        "<h1>Erasure report</h1><table>",
        row("deployment", doc["deployment"]),
        row("subject (keyed hash)", doc["subject_hash"]),
        row("status", doc["status"]),
        row("generated at", doc["generated_at"]),
        "</table>",
        "<h2>Certificate</h2>",
    ]
    if cert is None:
        parts.append("<p>No erasure certificate.</p>")
    else:
        c, v = cert["claims"], cert["verified"]
        parts += ["<table>", row("erased at", c.get("erased_at")), row("classes", ", ".join(c.get("classes", []))),
                  row("key versions destroyed", c.get("dek_versions_destroyed")),
                  row("reason code", c.get("reason_code")),
                  row("audit record", cert["record_index"]),
                  row("inclusion proof", f"verified against the signed checkpoint of size {v['checkpoint_size']}"),
                  row("live log", f"{v['log_size']} records, extends that checkpoint"),
                  row("witnessed", ", ".join(f"size {w['size']} by {', '.join(w['witnesses'])}"
                                             for w in v["witnessed_checkpoints"]) or "no witness configured"),
                  "</table>", f"<pre>{e(cert['checkpoint'])}</pre>"]
    parts.append("<h2>KEK epochs</h2><table>")
    for ep in doc["kek_epochs"]:
        parts.append(row(ep["class"], f"epoch {ep['epoch_at_erasure']}: "
                         + ("ended (destroyed " + ", ".join(ep["destroyed"]) + ")" if ep["epoch_ended"]
                            else "open (still live: " + ", ".join(ep["still_live_up_to_epoch"]) + ")")))
    parts.append("</table><h2>Legal hold</h2>")
    h = doc["hold"]
    parts.append("<p>None.</p>" if h is None else
                 f"<table>{row('code', h['code'])}{row('since', h['since'])}{row('placed by', h['placed_by'])}</table>")
    parts.append("<h2>History</h2><table>")
    for r in doc["history"]:
        parts.append(row(f"#{r['index']} {r['time']}", f"{r['action']} by {r['principal']}: {r['outcome']}"
                         + (f" ({r['reason']})" if r.get("reason") else "")))
    parts.append(f"</table><h2>Residual copies</h2><p>{e(doc['residual_copies'])}</p></body></html>\n")
    return "".join(parts)
