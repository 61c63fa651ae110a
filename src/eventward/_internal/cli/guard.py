"""``eventward scan``, ``eventward schema suggest-tags`` and ``eventward redact run``: the PII and
secrets guard (eventward._internal.guard) on the command line.

``scan`` reads a topic's stored events (``Subscribe`` on the topic; no key is released: tagged
fields are tokens and are skipped, untagged fields are what it looks at) or a file of JSON
lines, and reports which untagged field paths carry which kinds, with counts and schema
versions, never a value. ``suggest-tags`` turns a sample's findings into a schema proposal
that goes through the usual approval. ``redact run`` runs a redaction pipeline as its own
principal.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from eventward._internal.cli import common
from eventward._internal.cli.context import as_required, authorize, deployment
from eventward._internal.fieldspec import FieldSpec
from eventward.errors import EnvelopeError, InputError, NotFoundError

if TYPE_CHECKING:
    from eventward._internal.guard.scan import ScanReport

_AS = as_required()
_JSON = common.json_option()
_PROGRESS_EVENTS = 5000  # show a progress bar for scans longer than this
_MAX_LINE = 2 * 1024 * 1024
_EMPTY = FieldSpec()

redact_app = typer.Typer(help="Redaction pipelines: a raw stream to a clean stream.", no_args_is_help=True)


def _progress(total: int, label: str) -> Progress:
    return Progress(
        TextColumn(label), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
        console=common.err_console, transient=True, disable=total < _PROGRESS_EVENTS,
    )


def _lines(file: Path) -> list[bytes]:
    try:
        with file.open("rb") as fh:
            return [line for line in fh.read().splitlines() if line.strip()]
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}") from None


def _event(line: bytes, default_type: str | None) -> tuple[str | None, int | None, Any]:
    """(type, schema version or None, data) of one line: an envelope or bare event data."""
    from eventward._internal import envelope

    if len(line) > _MAX_LINE:
        raise InputError(f"a line is longer than {_MAX_LINE} bytes")
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise InputError("a line is not JSON") from None
    if isinstance(doc, dict) and "specversion" in doc:
        version = doc.get(envelope.EXT_SCHEMA)
        return doc.get("type"), version if isinstance(version, int) else None, doc.get("data")
    return default_type, None, doc


class _Specs:
    """Schema versions by (type, version), looked up once; unknown types scan with no tags."""

    def __init__(self, dep: Any) -> None:
        self._dep = dep
        self._cache: dict[tuple[str, int | None], tuple[int | None, FieldSpec]] = {}

    def get(self, type_: str | None, version: int | None) -> tuple[int | None, FieldSpec]:
        if type_ is None:
            return None, _EMPTY
        key = (type_, version)
        if key not in self._cache:
            try:
                v = self._dep.registry.get(type_, version) if version else self._dep.registry.active(type_)
                self._cache[key] = (v.version, v.spec)
            except NotFoundError:
                self._cache[key] = (None, _EMPTY)
        return self._cache[key]


def _scan_file(dep: Any, file: Path, type_: str | None, report: ScanReport) -> None:
    from eventward._internal.guard.scan import findings

    specs = _Specs(dep)
    lines = _lines(file)
    with _progress(len(lines), "scanning") as progress:
        task = progress.add_task("scan", total=len(lines))
        for line in lines:
            progress.advance(task)
            try:
                t, v, data = _event(line, type_)
            except InputError:
                report.skipped += 1
                continue
            version, spec = specs.get(t, v)
            report.add(t or "(untyped)", version, findings(data, spec))


def _scan_topic(dep: Any, topic: str, limit: int | None, report: ScanReport) -> None:
    """Every partition of the topic (``--limit``: the last N events of each)."""
    from eventward._internal.log.partitions import partition_streams

    specs = _Specs(dep)
    if not dep.transport.has_stream(topic):
        raise NotFoundError(f"no topic {topic}")
    policy = getattr(dep, "policy", None)
    count = policy.partitions(topic) if hasattr(policy, "partitions") else 1
    for stream in partition_streams(topic, count):
        if stream == topic or dep.transport.has_stream(stream):
            _scan_stream(dep, specs, stream, limit, report)


def _scan_stream(dep: Any, specs: _Specs, topic: str, limit: int | None, report: ScanReport) -> None:
    from eventward._internal import envelope
    from eventward._internal.guard.scan import findings

    end = dep.transport.end_offset(topic)
    start = max(0, end - limit) if limit else 0
    with _progress(end - start, "scanning") as progress:
        task = progress.add_task("scan", total=end - start)
        pos = start
        while pos < end:
            records = dep.transport.read(topic, pos, min(500, end - pos))
            if not records:
                break
            for rec in records:
                pos = rec.offset + 1
                try:
                    env = envelope.decode(rec.data)
                except EnvelopeError:
                    report.skipped += 1
                    continue
                t, v = env.get("type"), env.get(envelope.EXT_SCHEMA)
                version, spec = specs.get(t, v if isinstance(v, int) else None)
                report.add(t or "(untyped)", version, findings(env.get("data"), spec))
            progress.update(task, completed=pos - start)


def scan_cmd(
    topic: str = typer.Argument(None, metavar="TOPIC", help="Topic to scan (or --file)."),
    file: Path = typer.Option(None, "--file", "-f", help="JSON lines: event data or CloudEvents envelopes."),
    type_: str = typer.Option(None, "--type", "-t", help="Event type of bare data lines in --file."),
    limit: int = typer.Option(None, "--limit", min=1, help="Scan only the last N events of the topic."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Which untagged field paths carry PII or secrets: kinds, counts, schema versions (never values).

    Exit 1 if anything was found."""
    from eventward._internal.guard.scan import ScanReport
    from eventward._internal.policy.base import SUBSCRIBE

    if (topic is None) == (file is None):
        raise InputError("give a TOPIC or --file, not both")
    report = ScanReport()
    with deployment(principal) as dep:
        if topic is not None:
            authorize(dep, principal, SUBSCRIBE, ("Topic", topic))
            _scan_topic(dep, topic, limit, report)
        else:
            _scan_file(dep, file, type_, report)
    if as_json:
        common.emit_json({"source": topic or str(file), **report.to_json()})
    else:
        table = Table("type", "schema", "path", "kind", "events", title=f"untagged PII and secrets in {topic or file}",
                      title_justify="left")
        for row in report.rows():
            versions = ",".join(f"v{v}" for v in row["schema_versions"]) or "-"
            table.add_row(escape(row["type"]), versions, escape(row["path"]), row["kind"], str(row["events"]))
        common.console.print(table)
        common.console.print(f"{report.events} events scanned, {report.skipped} skipped, "
                             f"{len(report.rows())} finding(s)")
    if report.counts:
        sys.exit(1)


def suggest_tags_cmd(
    type_: str = typer.Argument(..., metavar="TYPE"),
    sample: Path = typer.Argument(..., metavar="SAMPLE.jsonl", help="JSON lines: event data or envelopes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the suggested document; propose nothing."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Propose the sensitivity tags TYPE's schema is missing, from a sample (usual approval applies)."""
    from eventward._internal.guard.scan import findings
    from eventward._internal.guard.suggest import suggest
    from eventward._internal.policy.base import READ_SCHEMA

    with deployment(principal) as dep:
        authorize(dep, principal, READ_SCHEMA, ("Schema", type_))
        active = dep.registry.active(type_)
        if active.fmt != "json":
            raise InputError("suggest-tags works on JSON Schema subjects")
        counts: Counter[tuple[str, str]] = Counter()
        events = 0
        for line in _lines(sample):
            t, _, data = _event(line, type_)
            if t != type_:
                continue
            events += 1
            for pair in set(findings(data, active.spec)):
                counts[pair] += 1
        s = suggest(active.document, counts)
        proposal = None
        if s.added and not dry_run:
            proposal = dep.registry.propose(principal, type_, s.document)
    doc: dict[str, Any] = {
        "type": type_, "based_on": active.version, "events": events, "added": s.added,
        "unplaceable": s.unplaceable, "proposed": proposal.version if proposal else None,
        "needs_security_approval": bool(proposal and proposal.needs_security_approval),
    }
    if as_json:
        common.emit_json(doc if not dry_run else {**doc, "document": s.document})
        return
    for a in s.added:
        common.console.print(f"tag {escape(a['path'])} as {a['class']} ({', '.join(a['kinds'])}; {a['events']} events)",
                             highlight=False)
    for u in s.unplaceable:
        common.console.print(f"cannot tag {escape(u['path'])} ({', '.join(u['kinds'])}): {u['why']}", highlight=False)
    if dry_run and s.added:
        common.print_code(orjson.dumps(s.document, option=orjson.OPT_INDENT_2).decode(), "json")
    elif proposal is not None:
        common.console.print(f"proposed {type_} v{proposal.version}: a second principal must approve it")
    elif not s.added:
        common.console.print(f"nothing to tag in {events} events of {type_}")


@redact_app.command("run", epilog=common.examples("eventward redact run orders-analytics.yaml --idle-timeout 5"))
def redact_run_cmd(
    file: Path = typer.Argument(..., metavar="PIPELINE.yaml"),
    max_events: int = typer.Option(None, "--max-events", min=1, help="Stop after N source events."),
    idle_timeout: float = typer.Option(None, "--idle-timeout", help="Stop after S seconds with nothing new."),
    as_json: bool = _JSON,
) -> None:
    """Run a redaction pipeline as its own principal (named in the file) until stopped."""
    from eventward._internal.guard.pipeline import Pipeline, PipelineSpec

    try:
        text = file.read_text()
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}") from None
    spec = PipelineSpec.from_yaml(text)
    with deployment(spec.principal) as dep:
        stats = Pipeline(dep, spec).run(max_events=max_events, idle_timeout=idle_timeout)
    if as_json:
        common.emit_json({"pipeline": spec.name, "emitted": stats.emitted, "refused": stats.refused})
    else:
        common.console.print(f"{spec.name}: {stats.emitted} emitted to {spec.sink_topic}, {stats.refused} refused")


def register(app: typer.Typer) -> None:
    """``scan``, ``redact run`` and ``schema suggest-tags`` (added to the schema group)."""
    from eventward._internal.cli.schema import schema_app

    app.command("scan", epilog=common.examples("eventward scan orders --as auditor --json",
                                               "eventward scan --file sample.jsonl --type OrderPlaced --as alice"))(
        scan_cmd
    )
    app.add_typer(redact_app, name="redact")
    schema_app.command(
        "suggest-tags", epilog=common.examples("eventward schema suggest-tags OrderPlaced sample.jsonl --as alice")
    )(suggest_tags_cmd)
