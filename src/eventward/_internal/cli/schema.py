"""``eventward schema ...`` (propose, approve, reject, list, show, check, mode) and ``eventward validate``.

Every command opens the home as one Deployment and acts ``--as PRINCIPAL`` (required, or
``EVENTWARD_PRINCIPAL``) under its Cedar policy: changes go through the Registry (authorized,
checked, audited in the home's audit log; approval needs a second principal), reads need
``read_schema`` on the type (``list`` shows only the readable ones). ``--as`` is asserted,
not authenticated: the CLI runs with the home's key material, so it is an operator tool;
authenticated access for services is the gateway (mTLS/JWT).

Output shows paths, finding kinds, versions and fingerprints; ``validate`` prints the path
and rule of each invalid line, never a value.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column, Table

from eventward._internal.cli import common
from eventward._internal.cli.context import as_required, authorize, deployment
from eventward.errors import EnvelopeError, InputError, ValidationError

if TYPE_CHECKING:
    from eventward._internal.schema import CheckReport, Finding, SchemaVersion

schema_app = typer.Typer(
    help="Governed event schemas: propose, approve, check (changes need a second principal).",
    no_args_is_help=True,
)

_AS = as_required()
_JSON = common.json_option()
_FORMAT = typer.Option("json", "--format", "-f", help="Schema format: json (JSON Schema) or avro.")


def _max_line() -> int:
    """An envelope around the largest allowed data (the schema modules load with the command)."""
    from eventward._internal.schema.json_schema import HARD_MAX_EVENT_BYTES

    return HARD_MAX_EVENT_BYTES + 64 * 1024


_PROGRESS_BYTES = 1024 * 1024  # show a progress bar for files larger than this


def _read(file: Path) -> bytes:
    from eventward._internal.schema.document import MAX_DOCUMENT_BYTES

    try:
        size = file.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise InputError(f"{file} is {size} bytes, larger than a schema may be ({MAX_DOCUMENT_BYTES})")
        return file.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}") from None


def _findings_table(title: str, findings: tuple[Finding, ...]) -> Table:
    table = Table(
        Column("path", no_wrap=True),
        Column("kind", no_wrap=True),
        "against",
        "message",
        title=title,
        title_justify="left",
    )
    for f in findings:
        against = f"v{f.against} {f.direction}".strip() if f.against else f.direction
        table.add_row(escape(f.path), f.kind, against, escape(f.message))
    return table


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"path": f.path, "kind": f.kind, "against": f.against, "direction": f.direction, "message": f.message}


def report_json(report: CheckReport) -> dict[str, Any]:
    """The stable --json form of a compatibility and security report (docs/cli.md)."""
    return {
        "type": report.type,
        "format": report.fmt,
        "fingerprint": report.fingerprint,
        "mode": str(report.mode),
        "compared": list(report.compared),
        "compatible": report.compatible,
        "compatibility": [_finding_json(f) for f in report.compatibility],
        "baseline": report.baseline,
        "needs_security_approval": report.needs_security_approval,
        "security": [_finding_json(f) for f in report.security],
    }


def _version_json(v: SchemaVersion) -> dict[str, Any]:
    return {
        "type": v.type,
        "version": v.version,
        "state": str(v.state),
        "format": v.fmt,
        "fingerprint": v.fingerprint,
        "proposer": v.proposer,
        "approvals": [{"kind": k, "principal": p} for k, p in v.approvals],
        "max_event_bytes": v.max_event_bytes,
        "subject_path": v.spec.subject_path or None,
        "fields": [{"path": r.path, "class": r.cls, "deterministic": r.deterministic} for r in v.spec.rules],
        "security_findings": [_finding_json(f) for f in v.security_findings],
        "document": v.document,
    }


def _print_report(report: CheckReport) -> None:
    console = common.console
    compared = ", ".join(f"v{v}" for v in report.compared) or "nothing (first version or mode NONE)"
    console.print(f"[bold]{report.type}[/] {report.fmt} {report.fingerprint[:23]}  mode {report.mode}")
    console.print(f"compatibility checked against: {compared}")
    if report.compatibility:
        console.print(_findings_table("[red]incompatible[/]", report.compatibility))
    else:
        console.print("[green]compatible[/]")
    if report.security:
        console.print(
            _findings_table("[yellow]security regressions: needs --security approval[/]", report.security)
        )
    elif report.baseline is not None:
        console.print(f"[green]no security regression[/] against v{report.baseline}")


def _print_version(v: SchemaVersion) -> None:
    console = common.console
    console.print(f"[bold]{v.type}[/] v{v.version} ({v.state}) {v.fmt} {v.fingerprint}")
    console.print(
        f"proposed by {v.proposer}; approvals: " + (", ".join(f"{k}={p}" for k, p in v.approvals) or "none")
    )
    console.print(f"max event size {v.max_event_bytes} bytes; data subject: {v.spec.subject_path or 'none'}")
    if v.spec.rules:
        table = Table(
            Column("sensitive field", no_wrap=True),
            "class",
            "deterministic",
            title="field spec",
            title_justify="left",
        )
        for r in v.spec.rules:
            table.add_row(escape(r.path), r.cls, "yes" if r.deterministic else "")
        console.print(table)
    if v.security_findings:
        console.print(_findings_table("security findings", v.security_findings))


@schema_app.command(
    "propose",
    epilog=common.examples(
        "eventward schema propose OrderPlaced order_placed.schema.json --as alice",
        "eventward schema approve OrderPlaced 1 --as bob",
    ),
)
def propose_cmd(
    type_: str = typer.Argument(..., metavar="TYPE", help="CloudEvents type (the subject)."),
    file: Path = typer.Argument(..., help="Schema document."),
    fmt: str = _FORMAT,
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Propose a new version; it needs approval by another principal to become active."""
    document = _read(file)
    with deployment(principal) as dep:
        p = dep.registry.propose(principal, type_, document, fmt)
    if as_json:
        common.emit_json({"type": p.type, "version": p.version, "fingerprint": p.fingerprint,
                          "proposer": p.proposer, "needs_security_approval": p.needs_security_approval,
                          "report": report_json(p.report)})
        return
    common.console.print(f"proposed [bold]{p.type}[/] v{p.version} {p.fingerprint[:23]}")
    _print_report(p.report)
    need = "approval and a --security approval" if p.needs_security_approval else "approval"
    common.console.print(f"awaiting {need} by a principal other than {p.proposer}")


@schema_app.command("approve")
def approve_cmd(
    type_: str = typer.Argument(..., metavar="TYPE"),
    version: int = typer.Argument(...),
    security: bool = typer.Option(
        False,
        "--security",
        help="Give the security approval (ApproveSecurity; never the proposer or the schema approver).",
    ),
    principal: str = _AS,
) -> None:
    """Approve a proposed version (never your own); it activates once all approvals are in."""
    with deployment(principal) as dep:
        v = dep.registry.approve(principal, type_, version, security=security)
    if v.state == "active":
        common.console.print(f"[green]{v.type} v{v.version} is active[/]")
    else:
        common.console.print(f"[yellow]{v.type} v{v.version} still proposed:[/] needs a --security approval")


@schema_app.command("reject")
def reject_cmd(
    type_: str = typer.Argument(..., metavar="TYPE"), version: int = typer.Argument(...), principal: str = _AS
) -> None:
    """Reject a proposed version (or withdraw your own)."""
    with deployment(principal) as dep:
        v = dep.registry.reject(principal, type_, version)
    common.console.print(f"{v.type} v{v.version} rejected")


@schema_app.command("list", epilog=common.examples("eventward schema list --as alice --json"))
def list_cmd(principal: str = _AS, as_json: bool = _JSON) -> None:
    """Every subject the principal may read, with its mode, active and pending version."""
    from eventward._internal.policy.base import READ_SCHEMA

    with deployment(principal) as dep:
        # explain(), not decide(): a listing filters, it does not attempt (nothing to audit as denied)
        subjects = [
            s for s in dep.registry.list()
            if dep.policy.explain(principal, READ_SCHEMA, ("Schema", s.type)).allowed
        ]
    if as_json:
        common.emit_json({"schemas": [
            {"type": s.type, "mode": str(s.mode), "active": s.active, "pending": s.pending,
             "versions": s.versions, "format": s.fmt, "fingerprint": s.fingerprint}
            for s in subjects
        ]})
        return
    table = Table(
        Column("type", no_wrap=True), "mode", "active", "pending", "versions", "format", "fingerprint"
    )
    for s in subjects:
        table.add_row(
            s.type,
            str(s.mode),
            f"v{s.active}" if s.active else "-",
            f"v{s.pending}" if s.pending else "-",
            str(s.versions),
            s.fmt or "-",
            (s.fingerprint or "-")[:23],
        )
    common.console.print(table)


@schema_app.command("show")
def show_cmd(
    type_: str = typer.Argument(..., metavar="TYPE"),
    version: int = typer.Argument(None, help="Default: the active version, else the newest."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """One version: state, approvals, field spec, findings and the document."""
    from eventward._internal.policy.base import READ_SCHEMA

    with deployment(principal) as dep:
        authorize(dep, principal, READ_SCHEMA, ("Schema", type_))
        v = dep.registry.get(type_, version)
    if as_json:
        common.emit_json(_version_json(v))
        return
    _print_version(v)
    common.print_code(orjson.dumps(v.document, option=orjson.OPT_INDENT_2).decode(), "json")


@schema_app.command(
    "check", epilog=common.examples("eventward schema check OrderPlaced v2.schema.json --as alice --json")
)
def check_cmd(
    type_: str = typer.Argument(..., metavar="TYPE"),
    file: Path = typer.Argument(...),
    fmt: str = _FORMAT,
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Dry run: compatibility and security report of a document against the subject (exit 1: incompatible)."""
    from eventward._internal.policy.base import READ_SCHEMA

    document = _read(file)
    with deployment(principal) as dep:
        authorize(dep, principal, READ_SCHEMA, ("Schema", type_))
        report = dep.registry.check(type_, document, fmt)
    if as_json:
        common.emit_json(report_json(report))
    else:
        _print_report(report)
    if not report.compatible:
        sys.exit(1)  # common.run drops typer.Exit codes


@schema_app.command("mode")
def mode_cmd(
    type_: str = typer.Argument(..., metavar="TYPE"),
    mode: str = typer.Argument(..., help="BACKWARD, FORWARD, FULL (each also _TRANSITIVE) or NONE."),
    principal: str = _AS,
) -> None:
    """Set the subject's compatibility mode."""
    with deployment(principal) as dep:
        m = dep.registry.set_mode(principal, type_, mode)
    common.console.print(f"{type_}: compatibility mode {m}")


def validate_cmd(
    type_: str = typer.Argument(..., metavar="TYPE"),
    file: Path = typer.Argument(..., help="JSON lines: event data or CloudEvents envelopes."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Validate each line against TYPE's active schema; exit 1 if any line is invalid."""
    from eventward._internal.policy.base import READ_SCHEMA

    with deployment(principal) as dep:
        authorize(dep, principal, READ_SCHEMA, ("Schema", type_))
        version = dep.registry.active(type_)
    try:
        size = file.stat().st_size
        fh = file.open("rb")
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}") from None
    bad = total = 0
    problems: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("validating"),
        BarColumn(),
        TaskProgressColumn(),
        console=common.err_console,
        transient=True,
        disable=size < _PROGRESS_BYTES,
    )
    with fh, progress:
        task = progress.add_task("validate", total=size)
        for number, line in enumerate(_lines(fh), start=1):
            progress.advance(task, len(line))
            if not line.strip():
                continue
            total += 1
            problem = _check_line(version, type_, line)
            if problem is not None:
                bad += 1
                if as_json:
                    problems.append({"line": number, "problem": problem})
            if as_json:
                continue
            if problem is None:
                common.console.print(f"line {number}: [green]OK[/]", highlight=False)
            else:
                common.console.print(f"line {number}: [red]{escape(problem)}[/]", highlight=False)
    if as_json:
        common.emit_json({"type": type_, "version": version.version, "valid": total - bad, "invalid": bad,
                          "problems": problems})
    else:
        common.console.print(f"{total - bad} valid, {bad} invalid (schema {type_} v{version.version})")
    if bad:
        sys.exit(1)  # common.run drops typer.Exit codes


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """Lines, each cut at _max_line() bytes (the rest of an oversize line is skipped, not parsed)."""
    limit = _max_line()
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # drain the rest of the oversize line
                more = fh.readline(limit)
                if not more or more.endswith(b"\n"):
                    break
        yield line


def _check_line(version: SchemaVersion, type_: str, line: bytes) -> str | None:
    """None if valid, else a one-line reason (path and rule, never a value)."""
    from eventward._internal import envelope

    limit = _max_line()
    if len(line) > limit:
        return f"oversize line (limit {limit} bytes)"
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        return f"not JSON (at byte {e.pos})"
    if isinstance(doc, dict) and "specversion" in doc:
        try:
            envelope.validate(doc)
        except EnvelopeError as e:
            return f"envelope: {e.message}"
        if doc["type"] != type_:
            return "envelope: type differs from the one validated against"
        if "data" not in doc:
            return "envelope: no data"
        doc = doc["data"]
    try:
        version.validate(doc)
    except ValidationError as e:
        return e.message
    return None


def register(app: typer.Typer) -> None:
    """Add ``eventward schema ...`` and ``eventward validate`` to the root app."""
    app.add_typer(schema_app, name="schema")
    app.command("validate")(validate_cmd)
