"""``eventward erasure``: what a regulator asks about one data subject's erasure.

``erasure status REF --hash`` lists each consumer group's answer to the erasure notice.

``erasure report SUBJECT`` prints the verified certificate, the KEK epoch status, holds, history
and the residual-copy statement as JSON or HTML. It needs read_audit. The subject id is hashed
with the deployment's key at once and never printed: the report names the subject by its hash.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin, authorize, deployment
from eventward.errors import InputError, NotFoundError

erasure_app = typer.Typer(help="Erasure evidence for regulators: verified certificates, epochs, holds.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``erasure`` sub-app to the root app."""
    app.add_typer(erasure_app, name="erasure")


def _read(value: str, what: str) -> str:
    path = Path(value)
    if path.is_file():
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError):
            raise NotFoundError(f"cannot read {what} file {path}", path=str(path)) from None
    return value


def _known(dep: Any, raw: str) -> str:
    """The subject's hash without creating anything for an id never seen (key services with
    pseudonyms look it up; once forgotten, only the certificate's reference finds it: --hash)."""
    lookup = getattr(dep.keys, "known_subject", None)
    h = lookup(raw) if lookup is not None else dep.keys.subject_hash(raw)
    if h is None:
        raise NotFoundError(
            "no key or legal hold is recorded for that subject; a forgotten subject is found by the "
            "subject_hash on its erasure certificate (--hash)"
        )
    return str(h)


@erasure_app.command(epilog=common.examples(
    "eventward erasure report c1 --format html --out report.html",
    "eventward erasure report 3f2a...e9 --hash --witness w1.vkey --witnessed cosigned.txt"))
def report(
    subject: str = typer.Argument(
        ..., metavar="SUBJECT", help="Data-subject id (- reads stdin), or its hash with --hash."),
    is_hash: bool = typer.Option(False, "--hash", help="SUBJECT is already the subject hash."),
    fmt: str = typer.Option("json", "--format", help="json or html."),
    witness: list[str] = typer.Option(None, "--witness", help="A witness's cosigner key (vkey, or a file)."),
    witnessed: list[Path] = typer.Option(None, "--witnessed", help="A checkpoint the witnesses cosigned."),
    witness_url: list[str] = typer.Option(
        None, "--witness-url", help="A served witness: its last cosigned checkpoint (and key) are fetched."),
    out: Path = typer.Option(None, "--out", help="Also write the report to this file."),
    principal: str = as_admin(),
) -> None:
    """The regulator's report for one subject; never any of the subject's personal data."""
    from eventward._internal.audit.log import AuditLog
    from eventward._internal.audit.note import parse_vkey
    from eventward._internal.audit.report import erasure_report, render_html
    from eventward._internal.audit.witness import fetch

    if fmt not in ("json", "html"):
        raise InputError("--format must be json or html")
    raw = sys.stdin.readline().rstrip("\r\n") if subject == "-" and not is_hash else subject
    keys = [parse_vkey(_read(w, "witness key").strip()) for w in witness or []]
    texts = [_read(str(p), "witnessed checkpoint") for p in witnessed or []]
    for url in witness_url or []:
        if not witness:
            keys.append(parse_vkey((fetch(url, "/vkey") or "").strip()))
        if (text := fetch(url, "/checkpoint")) is not None:
            texts.append(text)
    with deployment(principal) as dep:
        log = AuditLog.open(dep.home, authorizer=dep.policy, principal=principal)
        try:
            log.size()  # the ReadAudit gate, before anything about the subject is looked up
            h = raw if is_hash else _known(dep, raw)
            doc = erasure_report(dep, h, log=log, witnesses=keys, witnessed=texts)
        finally:
            log.close()
    text = render_html(doc) if fmt == "html" else orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    if out is not None:
        out.write_text(text)


def _reference(dep: object, raw: str, is_hash: bool) -> str:
    """The pseudonym a status is kept under: the given reference, or the subject's pseudonym
    while it still has one (after ``forget`` only the reference printed by forget finds it)."""
    if is_hash:
        return raw
    found = dep.keys.known_subject(raw)  # type: ignore[attr-defined]
    if found is None:
        raise NotFoundError(
            "no pseudonym for this subject (never seen, or forgotten): pass the erasure reference "
            "that forget printed, with --hash"
        )
    return str(found)


@erasure_app.command(epilog=common.examples(
    "eventward erasure status 3f2a...e9 --hash", "eventward erasure status 3f2a...e9 --hash --json"))
def status(
    subject: str = typer.Argument(
        ..., metavar="SUBJECT", help="Erasure reference (subject hash) with --hash, or a data-subject id."),
    is_hash: bool = typer.Option(False, "--hash", help="SUBJECT is the reference forget printed."),
    as_json: bool = common.json_option(),
    principal: str = as_admin(),
) -> None:
    """Each consumer group's answer to the erasure notice: acknowledged when, pending since when, or
    failed with the hook's error code; and whether the completion record was written. Exit 1
    while a group has not acknowledged."""
    from eventward._internal.audit.log import AUDIT_RESOURCE
    from eventward._internal.policy.base import READ_AUDIT

    raw = sys.stdin.readline().rstrip("\r\n") if subject == "-" and not is_hash else subject
    with deployment(principal) as dep:
        authorize(dep, principal, READ_AUDIT, AUDIT_RESOURCE)  # before anything about the subject
        ref = _reference(dep, raw, is_hash)
        st = dep.notices.status(ref)
        now = time.time()
    if st is None:
        raise NotFoundError("no erasure notice under that reference")
    doc = st.to_json(now)
    if as_json:
        common.emit_json(doc)
    else:
        _print_status(doc)
    if st.completed is None:
        raise typer.Exit(1)


def _print_status(doc: dict) -> None:
    def when(t: object) -> str:
        return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(t)))  # type: ignore[arg-type]

    t = Table(title=f"erasure notice {doc['subject_hash']} (certificate: audit record {doc['certificate_index']})")
    for col in ("group", "state", "since", "acknowledged", "failed", "error code"):
        t.add_column(col)
    for g in doc["groups"]:
        t.add_row(escape(g["group"]), g["state"], when(g["since"]), when(g["acknowledged"]), when(g["failed_at"]),
                  g["error_code"] or "-")
    common.console.print(t)
    if doc["complete"]:
        common.console.print(f"complete: every group acknowledged ({when(doc['completed'])}); the completion "
                             "record is in the audit log", highlight=False)
    else:
        waiting = [g["group"] for g in doc["groups"] if g["state"] != "acked"]
        common.console.print(f"[yellow]incomplete[/]: {len(waiting)} group(s) have not acknowledged",
                             highlight=False)
