"""``eventward erasure``: what a regulator asks about one data subject's erasure.

``erasure report SUBJECT`` prints the verified certificate, the KEK epoch status, holds, history
and the residual-copy statement as JSON or HTML. It needs read_audit. The subject id is hashed
with the deployment's key at once and never printed: the report names the subject by its hash.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from eventward.audit.log import AuditLog
from eventward.audit.note import parse_vkey
from eventward.audit.report import erasure_report, render_html
from eventward.cli import common
from eventward.cli.context import as_admin, deployment
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
    out: Path = typer.Option(None, "--out", help="Also write the report to this file."),
    principal: str = as_admin(),
) -> None:
    """The regulator's report for one subject; never any of the subject's personal data."""
    if fmt not in ("json", "html"):
        raise InputError("--format must be json or html")
    raw = sys.stdin.readline().rstrip("\r\n") if subject == "-" and not is_hash else subject
    keys = [parse_vkey(_read(w, "witness key").strip()) for w in witness or []]
    texts = [_read(str(p), "witnessed checkpoint") for p in witnessed or []]
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
