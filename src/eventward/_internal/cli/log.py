"""Log commands: ``produce``, ``consume``, ``replay``, ``dlq list|show|redrive``, ``trust ...``.

Every command opens the home as one Deployment (the configured transport: embedded, NATS
or Kafka) and acts ``--as PRINCIPAL`` under its Cedar policy: ``produce`` needs Publish,
``consume`` Subscribe, and what a consumer sees decrypted is exactly the classes the policy
lets it Decrypt (the rest is redacted, or shown as tokens with ``--tokens``). ``--as`` is
required for data-plane commands and defaults to ``admin`` for ``trust``. It is asserted,
not authenticated: the CLI runs with the home's key material, so it is an operator tool;
authenticated access for services is the gateway (mTLS/JWT).

Producers seal batches with their seal key, registered by an administrator with ``eventward
trust register P``. Consumers seal dead letters with their dead-letter key (or, without one,
their seal key); it is made on first use, after the policy let them consume, so consuming
needs no key step. Subscribe is decided before anything else. Events go out as JSON lines on
stdout; status, tables and summaries go to stderr, so output can be piped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin, as_required, deployment, require_signing_key
from eventward.errors import EventwardError, InputError, NotFoundError

if TYPE_CHECKING:
    from eventward._internal.client.consumer import Consumer
    from eventward._internal.client.types import Delivered, RunStats
    from eventward._internal.deployment import Deployment

# The key purposes (client.trust) and seal suites (crypto.seal) the options offer, spelt here so
# that building the CLI loads neither; tests/cli/test_cli_lazy_imports.py holds them equal.
SEAL, DEAD_LETTER = "seal", "dead_letter"
ED25519, HYBRID = "ed25519", "ed25519+ml-dsa-65"
SUITES = (ED25519, HYBRID)

MAX_LINE = 2 * 1024 * 1024
CHUNK = 500  # input lines per all-or-nothing chunk

trust_app = typer.Typer(help="Producer signing keys: who may seal batches.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: refused or failing events, kept encrypted.", no_args_is_help=True)

_AS = as_required()
_ADMIN_AS = as_admin()
_GROUP = typer.Option(None, "--group", "-g", help="Consumer group (default: the principal).")
_TOKENS = typer.Option(False, "--tokens", help="Show fields the principal may not decrypt as tokens.")
_PURPOSE = typer.Option(
    SEAL,
    "--purpose",
    help=f"{SEAL}: seals the principal's batches; {DEAD_LETTER}: seals only the dead letters it writes.",
)
_SUITE = typer.Option(
    ED25519,
    "--suite",
    help=f"Seal suite: {ED25519}, or {HYBRID} (post-quantum hybrid: both signatures on every seal). "
    f"One of: {', '.join(SUITES)}.",
)
_JSON = common.json_option()


def _consumer(dep: Deployment, principal: str, topic: str, group: str | None, **kw: Any) -> Consumer:
    """Subscribe is decided first (Deployment.consumer); no key step: a dead-letter key is made
    when the first dead letter is written."""
    return dep.consumer(principal, topic, group=group, **kw)


def _uncleared(tokens: bool) -> Literal["token"] | None:
    """None keeps the deployment's configured default (consumer.uncleared, normally redact)."""
    return "token" if tokens else None


# --- output ----------------------------------------------------------------------------------


class _ReaderGone(BaseException):
    """stdout was closed (``consume ... | head``). A BaseException on purpose: the consumer
    must not count it as a handler failure (that would dead-letter the event); the event
    stays unsettled and is delivered again next time."""


def _emit(event: Delivered) -> None:
    """One event as a JSON line on stdout (not through Rich: no markup, no wrapping)."""
    try:
        sys.stdout.write(orjson.dumps(event.to_json()).decode() + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise _ReaderGone from None


def _until_reader_gone(run: Callable[[], RunStats]) -> RunStats | None:
    """Run a delivery loop; None if the reader of stdout went away (then stop quietly)."""
    try:
        return run()
    except _ReaderGone:
        with suppress(OSError, ValueError):  # no "Exception ignored" noise when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        common.err_console.print("stopped: output closed", highlight=False)
        return None


def _summary(what: str, stats: RunStats | None) -> None:
    if stats is None:
        return
    parts = [f"{stats.delivered} delivered"]
    if stats.redelivered:
        parts.append(f"{stats.redelivered} already handled")
    if stats.dead_lettered:
        parts.append(f"{stats.dead_lettered} dead-lettered")
    if stats.refused:
        parts.append("refused: " + ", ".join(f"{r}={n}" for r, n in sorted(stats.refused.items())))
    if stats.gaps:
        parts.append(f"{stats.gaps} gap report(s)")
    common.err_console.print(f"[bold]{what}[/]: " + "; ".join(parts), highlight=False)


# --- produce ---------------------------------------------------------------------------------

_PRODUCED_ATTRS = frozenset({"type", "data", "id", "source", "subject"})


def _event_of(line: bytes, n: int) -> dict[str, Any]:
    """``{"type", "data", [id, source, subject]}`` or a full CloudEvent, whose other attributes
    (time, dataschema, datacontenttype, extensions) are kept as sent, never dropped: the producer
    refuses by name what it cannot keep (``ew*``, malformed ones). Errors name the line."""
    from eventward._internal import envelope

    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise InputError(f"line {n}: not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or "data" not in obj:
        raise InputError(f"line {n}: expected an object with 'type' and 'data'")
    if "specversion" in obj:
        obj = envelope.unset_nulls(obj)  # JSON format: a null attribute is unset
        if obj.get("specversion") != envelope.SPECVERSION:
            raise InputError(f"line {n}: attribute 'specversion' must be \"1.0\"")
        if "data_base64" in obj:
            raise InputError(f"line {n}: data_base64 is not accepted: event data is JSON ('data')")
    else:
        extra = set(obj) - _PRODUCED_ATTRS
        if extra:
            raise InputError(
                f"line {n}: attribute(s) {', '.join(sorted(extra)[:5])} cannot be set by the caller "
                "(send a full CloudEvent, with specversion, to set CloudEvents attributes)"
            )
    for name in ("id", "source", "subject"):
        if name in obj and (not isinstance(obj[name], str) or not obj[name]):
            raise InputError(f"line {n}: attribute '{name}' must be a non-empty string")
    return obj


def _lines(stream: IO[bytes], progress: Progress, task: Any) -> Iterator[tuple[int, bytes]]:
    for n, line in enumerate(stream, 1):
        if len(line) > MAX_LINE:
            raise InputError(f"line {n}: longer than {MAX_LINE} bytes")
        progress.advance(task, len(line))
        if line.strip():
            yield n, line


def produce(
    topic: str = typer.Argument(..., help="Topic (stream) to publish to."),
    file: str = typer.Argument("-", help="JSON lines file, or - for stdin."),
    principal: str = _AS,
) -> None:
    """Publish JSON lines: {"type": ..., "data": ...} objects or full CloudEvents. Prints ids.

    Input is sent in chunks of 500 lines; a bad line stops the run and nothing of its chunk
    is sent (earlier chunks were acknowledged and their ids printed)."""
    with deployment(principal) as dep, _open_input(file) as (stream, size):
        require_signing_key(dep, principal)
        # One batch per chunk, flushed only here: a rejected line leaves its chunk unsent.
        producer = dep.producer(principal, topic, max_batch=CHUNK + 1, max_delay_ms=3_600_000)
        sent = 0
        with _progress(size) as progress:
            task = progress.add_task("producing", total=size)
            chunk = 0
            try:
                for n, line in _lines(stream, progress, task):
                    ev = _event_of(line, n)
                    attrs = {k: v for k, v in ev.items() if k not in _PRODUCED_ATTRS and k != "specversion"}
                    try:
                        producer.send(
                            ev["type"],
                            ev.get("data"),
                            id=ev.get("id"),
                            source=ev.get("source"),
                            subject=ev.get("subject"),
                            time=attrs.pop("time", None),
                            dataschema=attrs.pop("dataschema", None),
                            datacontenttype=attrs.pop("datacontenttype", None),
                            extensions=attrs,
                        )
                    except EventwardError as e:
                        e.message = f"line {n}: {e.message}"
                        raise
                    chunk += 1
                    if chunk == CHUNK:
                        sent += _print_ids(producer.flush())
                        chunk = 0
                sent += _print_ids(producer.flush())
            except BaseException:
                producer.discard()
                with suppress(EventwardError):  # a complete earlier chunk may still await its retry
                    sent += _print_ids(producer.flush())
                raise
        common.err_console.print(f"[bold green]sent[/] {sent} event(s) to {topic}", highlight=False)


def _print_ids(ids: list[str]) -> int:
    if ids:
        sys.stdout.write("".join(f"{i}\n" for i in ids))
        sys.stdout.flush()
    return len(ids)


@contextmanager
def _open_input(file: str) -> Iterator[tuple[IO[bytes], int | None]]:
    if file == "-":
        yield sys.stdin.buffer, None
        return
    path = Path(file)
    try:
        f = path.open("rb")
    except OSError:
        raise NotFoundError(f"cannot read input file {path}") from None
    with f:
        yield f, path.stat().st_size


def _progress(total: int | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} bytes"),
        TimeElapsedColumn(),
        console=common.err_console,
        transient=True,
        disable=total is None or total < 256 * 1024,
    )


# --- consume / replay --------------------------------------------------------------------------


def consume(
    topic: str = typer.Argument(..., help="Topic (stream) to read."),
    principal: str = _AS,
    group: str | None = _GROUP,
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at offset 0 if the group is new."
    ),
    max_events: int | None = typer.Option(None, "--max", help="Stop after this many events."),
    idle: float = typer.Option(1.0, "--idle", help="Stop after this many seconds without new events."),
    tokens: bool = _TOKENS,
    member: str | None = typer.Option(
        None, "--member", metavar="I/N",
        help="Read as member I of N of the group: of a partitioned topic, partition p goes to member p mod N.",
    ),
) -> None:
    """Print verified events as JSON lines, decrypted as far as the policy lets the principal Decrypt."""
    extra: dict[str, Any] = {} if member is None else {"partition_of": _member(member)}
    with deployment(principal) as dep:
        consumer = _consumer(
            dep, principal, topic, group, from_beginning=from_beginning, uncleared=_uncleared(tokens), **extra
        )
        _require_stream(dep, topic)  # after authorization: a stranger learns nothing about streams
        stats = _until_reader_gone(lambda: consumer.run(_emit, max_events=max_events, idle_timeout=idle))
    _summary("consumed", stats)


def replay(
    topic: str = typer.Argument(..., help="Topic (stream) to replay."),
    principal: str = _AS,
    from_offset: int = typer.Option(..., "--from-offset", min=0, help="First offset to replay."),
    to_offset: int | None = typer.Option(None, "--to-offset", min=0, help="Stop before this offset."),
    tokens: bool = _TOKENS,
    partition: int = typer.Option(
        0, "--partition", min=0, help="Partition of a partitioned topic (offsets are per partition)."
    ),
) -> None:
    """Re-read a range (needs replay on the topic; audited; stale events allowed; offsets untouched)."""
    extra: dict[str, Any] = {"partition": partition} if partition else {}
    with deployment(principal) as dep:
        consumer = _consumer(dep, principal, topic, f"replay.{principal}", uncleared=_uncleared(tokens))
        _require_stream(dep, topic)
        stats = _until_reader_gone(
            lambda: consumer.replay(_emit, from_offset=from_offset, to_offset=to_offset, **extra)
        )
    _summary("replayed", stats)


def _member(text: str) -> tuple[int, int]:
    """``I/N`` as (I, N); the consumer checks it against the topic's partition count."""
    i, sep, n = text.partition("/")
    if not sep or not i.isdigit() or not n.isdigit():
        raise InputError(f"--member must be I/N (e.g. 0/2), not {text[:20]!r}", path="member")
    return int(i), int(n)


def _require_stream(dep: Deployment, topic: str) -> None:
    if not dep.transport.has_stream(topic):
        raise NotFoundError(f"no stream {topic!r} in this deployment")


# --- dead letters ----------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    topic: str = typer.Argument(..., help="Source topic."),
    principal: str = _AS,
    all_: bool = typer.Option(False, "--all", help="Include resolved (redriven) entries."),
    as_json: bool = _JSON,
) -> None:
    """Unresolved dead letters of a topic (metadata only)."""
    with deployment(principal) as dep:  # reading needs Subscribe (checked by list), no key
        entries = dep.dead_letters(principal, topic).list(principal=principal, include_resolved=all_)
    if as_json:
        common.emit_json({"topic": topic, "entries": [dict(e.summary()) for e in entries]})
        return
    t = Table(title=f"{topic}.dlq (details: eventward dlq show {topic} OFFSET)")
    for col in ("offset", "reason", "from", "event id", "type", "attempts"):
        t.add_column(col, overflow="fold")
    for e in entries:
        t.add_row(
            str(e.dlq_offset),
            f"{e.code}/{e.reason}",
            f"{e.stream}@{e.offset}",
            e.event_id or "-",
            e.event_type or "-",
            str(e.attempts),
        )
    common.console.print(t)


@dlq_app.command("show")
def dlq_show(
    topic: str = typer.Argument(..., help="Source topic."),
    dlq_offset: int = typer.Argument(..., metavar="OFFSET", help="Offset of the entry in TOPIC.dlq."),
    principal: str = _AS,
    as_json: bool = typer.Option(False, "--json", help="Accepted for uniformity: the output is always JSON."),
) -> None:
    """One entry as JSON: its metadata and the original event's attributes (data stays encrypted)."""
    from eventward._internal import envelope

    with deployment(principal) as dep:
        e = dep.dead_letters(principal, topic).get(dlq_offset, principal=principal)
    doc: dict[str, Any] = dict(e.summary())
    try:
        original = envelope.decode(e.original)
        doc["original_attributes"] = {k: v for k, v in original.items() if k != "data"}
    except EventwardError as err:
        doc["original_attributes"] = None
        doc["original_error"] = err.code
    doc["original_bytes"] = len(e.original)
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


@dlq_app.command("redrive")
def dlq_redrive(
    topic: str = typer.Argument(..., help="Source topic."),
    ids: list[int] | None = typer.Argument(None, help="DLQ offsets to redrive (default: all unresolved)."),
    principal: str = _AS,
    group: str | None = _GROUP,
    tokens: bool = _TOKENS,
) -> None:
    """Re-verify and re-deliver dead letters through the normal consumer path (printed as JSON lines)."""
    with deployment(principal) as dep:
        consumer = _consumer(dep, principal, topic, group, uncleared=_uncleared(tokens))
        dlq = dep.dead_letters(principal, topic)
        stats = _until_reader_gone(lambda: dlq.redrive(consumer, _emit, ids or None, principal=principal))
    _summary("redriven", stats)


# --- trust -----------------------------------------------------------------------------------


@trust_app.command("list")
def trust_list(
    producer: str | None = typer.Option(None, "--principal", metavar="PRINCIPAL", help="Only this principal."),
    by: str = _ADMIN_AS,
    as_json: bool = _JSON,
) -> None:
    """Signing keys, their purpose and status (active, retired, revoked): public metadata, no grant needed."""
    with deployment(by) as dep:
        keys = dep.trust.list(producer)
    if as_json:
        common.emit_json({"keys": [
            {"kid": k.kid, "principal": k.principal, "purpose": k.purpose, "suite": k.suite, "status": k.status,
             "created": _when(k.created).replace(" ", "T"), "changed": _when(k.changed).replace(" ", "T"),
             "by": k.changed_by}
            for k in keys
        ]})
        return
    t = Table(title="trust registry")
    for col in ("kid", "principal", "purpose", "suite", "status", "created", "changed", "by"):
        t.add_column(col, overflow="fold")
    for k in keys:
        t.add_row(k.kid, k.principal, k.purpose, k.suite, k.status, _when(k.created), _when(k.changed), k.changed_by)
    common.console.print(t)


@trust_app.command("anchor", epilog=common.examples(
    "eventward trust anchor", "eventward profile add ops --url https://cp:8443 --ca ca.crt --cert ops.crt "
    "--key ops.key --anchor \"$(eventward trust anchor)\" --audit-key \"$(eventward audit public-key)\""))
def trust_anchor() -> None:
    """Print the control plane's anchor public key, which signs trust entries, grants and notices
    (made on first use): pin it in operator profiles (profile add --anchor), out of band. Public,
    no grant needed."""
    from eventward._internal.control.anchor import ANCHOR_FILE, Anchor

    home = common.home().require()
    sys.stdout.write(Anchor.load_or_create(home.root / ANCHOR_FILE).public_text + "\n")


@trust_app.command(
    "register", epilog=common.examples("eventward trust register orders-svc --as admin", "eventward trust list --json")
)
def trust_register(
    producers: list[str] = typer.Argument(..., help="Principal(s) that produce or consume."),
    by: str = _ADMIN_AS,
    purpose: str = _PURPOSE,
    suite: str = _SUITE,
) -> None:
    """Create the first signing key of each principal (private key 0600 in the home); needs rotate_keys on it.

    Producers get a seal key; consumers that only read need just a dead-letter key
    (``--purpose dead_letter``), which cannot seal events on a topic.
    Principals are registered in order; on an error the ones before it stay registered."""
    with deployment(by) as dep:
        for producer in producers:
            s = dep.trust.register(producer, by=by, purpose=purpose, suite=suite)
            common.console.print(
                f"[bold green]registered[/] {producer} ({purpose}, {s.suite}): {s.kid}", highlight=False
            )


@trust_app.command("rotate")
def trust_rotate(
    producer: str = typer.Argument(..., help="Producer principal."), by: str = _ADMIN_AS, purpose: str = _PURPOSE,
    suite: str = _SUITE,
) -> None:
    """A new signing key; the old one still verifies what it sealed (needs rotate_keys on the producer).

    ``--suite ed25519+ml-dsa-65`` migrates the producer to hybrid post-quantum seals."""
    with deployment(by) as dep:
        s = dep.trust.rotate(producer, by=by, purpose=purpose, suite=suite)
    common.console.print(f"[bold green]rotated[/] {producer}: now {s.kid} ({s.suite})", highlight=False)


@trust_app.command("revoke")
def trust_revoke(kid: str = typer.Argument(..., help="Key id to revoke."), by: str = _ADMIN_AS) -> None:
    """Refuse every batch sealed with this key from now on (reason revoked_key; needs rotate_keys)."""
    with deployment(by) as dep:
        dep.trust.revoke(kid, by=by)
    common.console.print(f"[bold red]revoked[/] {kid}", highlight=False)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command(
        "produce",
        epilog=common.examples(
            "eventward produce orders --as orders-svc events.jsonl",
            """echo '{"type": "OrderPlaced", "data": {...}}' | eventward produce orders --as orders-svc -""",
        ),
    )(produce)
    app.command(
        "consume",
        epilog=common.examples(
            "eventward consume orders --as shipping-svc --from-beginning",
            "eventward consume orders --as analytics-svc --max 10 --idle 5 | jq .data",
        ),
    )(consume)
    app.command("replay")(replay)
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(trust_app, name="trust")
