"""``eventward audit``: read the audit log, prove records, sign checkpoints, verify everything.

The CLI reads the home's audit log directly: whoever can read the home's files can read
the log, so no ReadAudit check is made here (the gateway makes it for remote readers).
Verification commands also work without a home: ``--db`` and ``--key`` are all they need.
Documents meant to be saved (checkpoints, proofs, certificates) go to stdout or ``--out``;
status lines go to stderr.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from eventward.audit.certificate import find_certificate, verify_certificate
from eventward.audit.log import AuditLog
from eventward.audit.signing import AuditVerifier, load_signer
from eventward.audit.verify import verify_log
from eventward.cli import common
from eventward.errors import ConfigError, NotFoundError
from eventward.home import Home

audit_app = typer.Typer(
    help="Tamper-evident audit log: records, proofs, signed checkpoints, erasure certificates.",
    no_args_is_help=True,
)

_KEY = typer.Option(None, "--key", help="Audit verifier key (or a file holding it); default: the home's key.")
_OUT = typer.Option(None, "--out", help="Also write the document to this file.")


def register(app: typer.Typer) -> None:
    """Add the ``audit`` sub-app to the root app."""
    app.add_typer(audit_app, name="audit")


def _open() -> AuditLog:
    return AuditLog.open(common.home().require())


def _read_file(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        raise NotFoundError(f"cannot read {what} file {path}", path=str(path)) from None


def _verifier(key: str | None, home: Home | None) -> AuditVerifier | None:
    if key is not None:
        path = Path(key)
        return AuditVerifier.of(_read_file(path, "key").strip() if path.is_file() else key)
    if home is not None and home.audit_key.exists():
        return load_signer(home.audit_key).verifier
    return None


def _emit(text: str, out: Path | None) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
    if out is not None:
        out.write_text(text)
        common.err_console.print(f"written to {out}", highlight=False)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


@audit_app.command()
def tail(n: int = typer.Option(20, "-n", help="How many records, newest last.")) -> None:
    """Show the newest records."""
    with _open() as log:
        records = log.tail(n)
    table = Table()
    for name in ("#", "time", "principal", "action", "resource", "outcome", "reason", "meta"):
        table.add_column(name, overflow="fold")  # an audit view never hides part of a record
    for r in records:
        meta = " ".join(f"{k}={v}" for k, v in r.meta.items())
        cells = (str(r.index), r.time, r.principal, r.action, r.resource, r.outcome, r.reason, meta)
        table.add_row(*(Text(c) for c in cells))  # Text: record fields are never parsed as markup
    common.console.print(table)


@audit_app.command()
def show(index: int = typer.Argument(..., help="Record index.")) -> None:
    """Show one record: its exact stored bytes and leaf hash."""
    with _open() as log:
        record = log.get(index)
        leaf = log.prove(index).leaf_hash
    doc = {"record": orjson.loads(record.body), "leaf_hash": _b64(leaf)}
    _emit(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n", None)


@audit_app.command()
def prove(
    index: int = typer.Argument(..., help="Record index."),
    size: int = typer.Option(None, "--size", help="Tree size to prove against (default: now)."),
    out: Path = _OUT,
) -> None:
    """Inclusion proof of a record, with the record bytes and the root it proves against."""
    with _open() as log:
        proof = log.prove(index, size)
        doc = {
            "proof": proof.to_dict(),
            "root": _b64(log.root(proof.tree_size)),
            "record": log.get(index).body.decode(),
        }
    _emit(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n", out)


@audit_app.command()
def checkpoint(out: Path = _OUT) -> None:
    """Sign and print a checkpoint of the current tree (C2SP signed-note format); it is also kept."""
    with _open() as log:
        cp = log.checkpoint()
    _emit(cp.text, out)


@audit_app.command("public-key")
def public_key() -> None:
    """Print the audit verifier key, for anyone who checks checkpoints and certificates."""
    with _open() as log:
        _emit(log.verifier.vkey() + "\n", None)


@audit_app.command()
def verify(
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A checkpoint published earlier."),
    db: Path = typer.Option(None, "--db", help="Verify this database file instead of the home's."),
    key: str = _KEY,
) -> None:
    """Recompute the whole tree and check every signed checkpoint; exit 1 naming the first bad index."""
    home = None if db is not None else common.home().require()
    verifier = _verifier(key, home)
    cp_text = _read_file(checkpoint, "checkpoint") if checkpoint is not None else None
    if cp_text is not None and verifier is None:
        raise ConfigError("--checkpoint needs the audit verifier key (--key)")
    source = db if db is not None else home.audit_db  # type: ignore[union-attr]
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=common.err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)
        report = verify_log(
            source,
            checkpoint=cp_text,
            public_key=verifier,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if report.error is not None:
        where = "" if report.error.index is None else f" (first bad index: {report.error.index})"
        common.err_console.print(f"[bold red]FAILED[/]: {report.error.message}{where}", highlight=False, soft_wrap=True)
        raise SystemExit(1)  # not typer.Exit: common.run (standalone_mode=False) would drop its code
    common.console.print(
        f"[green]OK[/]: {report.size} records, {report.nodes_checked} tree nodes, "
        f"{report.checkpoints_checked} signed checkpoints; root {_b64(report.root)}"
        + ("" if verifier else " [yellow](no verifier key: checkpoints not checked)[/]"),
        highlight=False,
        soft_wrap=True,
    )


@audit_app.command()
def certificate(
    subject: str = typer.Argument(..., help="Data-subject id ('-' reads it from stdin), or its hash with --hash."),
    is_hash: bool = typer.Option(False, "--hash", help="SUBJECT is already the subject hash."),
    out: Path = _OUT,
) -> None:
    """Print the newest erasure certificate of a subject (looked up by its keyed hash)."""
    home = common.home().require()
    subject_hash = subject if is_hash else _subject_hash(home, subject)
    with AuditLog.open(home) as log:
        cert = find_certificate(log, subject_hash)
        verify_certificate(cert, log.verifier, log=log)
    _emit(cert.to_json(), out)
    common.err_console.print(f"[green]verified[/]: record {cert.index}, signature, proof and checkpoint")


def _subject_hash(home: Home, subject: str) -> str:
    """Hash a raw subject id with the key service; the raw id is never printed or stored."""
    from eventward.cli.keys import open_keys

    raw = sys.stdin.readline().rstrip("\r\n") if subject == "-" else subject
    with open_keys(home) as keys:
        return keys.subject_hash(raw)


@audit_app.command("verify-certificate")
def verify_certificate_cmd(
    file: Path = typer.Argument(..., help="Certificate file (JSON)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A later checkpoint to check consistency with."),
    key: str = _KEY,
    offline: bool = typer.Option(False, "--offline", help="Do not consult the home's audit log."),
) -> None:
    """Check a certificate's signature, inclusion proof and checkpoint (and consistency with the log)."""
    home = None if offline else common.home()
    if home is not None and not home.audit_db.exists():
        home = None
    verifier = _verifier(key, home)
    if verifier is None:
        raise ConfigError("no audit verifier key: pass --key")
    text = _read_file(file, "certificate")
    later = _read_file(checkpoint, "checkpoint") if checkpoint is not None else None
    if home is None:
        check = verify_certificate(text, verifier, checkpoint=later)
    else:
        with AuditLog.open(home) as log:
            check = verify_certificate(text, verifier, log=log, checkpoint=later)
    lines = [
        f"[green]OK[/]: erasure certificate for subject hash {check.subject_hash}",
        f"  record {check.index} included in the signed checkpoint of size {check.checkpoint_size}",
    ]
    if check.later_checkpoint_size is not None:
        lines.append(f"  consistent with the later checkpoint of size {check.later_checkpoint_size}")
    if check.log_size is not None:
        lines.append(f"  the audit log ({check.log_size} records) still extends that checkpoint")
    else:
        lines.append("  [yellow]not checked against a live log[/] (offline)")
    common.console.print("\n".join(lines), highlight=False)
