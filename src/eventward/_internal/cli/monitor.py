"""``eventward monitor``, ``alerts``, ``lag`` and ``siem``: security monitoring from the CLI.

All of them read the audit log or consumer offsets, so they need ``read_audit`` for ``--as``
(default ``admin``). ``monitor`` runs the anomaly rules (docs/monitoring.md) over the whole audit
log offline, as ``serve`` runs them live; ``--record`` writes the alerts not recorded yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin, authorize, deployment
from eventward.errors import InputError

if TYPE_CHECKING:
    from eventward._internal.audit.log import AuditLog
    from eventward._internal.deployment import Deployment
    from eventward._internal.monitor.rules import Alert

_AS = as_admin()
_JSON = common.json_option()
_RULES = typer.Option(None, "--rules", help="Rules YAML overriding the shipped defaults per rule.")


def register(app: typer.Typer) -> None:
    app.command("monitor", epilog=common.examples(
        "eventward monitor", "eventward monitor --rules rules.yaml --record", "eventward monitor --json"))(monitor)
    app.command("alerts", epilog=common.examples("eventward alerts", "eventward alerts --json"))(alerts)
    app.command("lag", epilog=common.examples("eventward lag", "eventward lag --threshold 1000 --json"))(lag)
    app.command("siem", epilog=common.examples(
        "eventward siem --to -", "eventward siem --to audit.ocsf.jsonl --from 1000",
        "eventward siem --to nats://127.0.0.1:4222/security.ocsf --alerts-only",
        "eventward siem --format syslog --to audit.syslog", "eventward siem --syslog tcp://siem.internal:601"))(siem)


@contextmanager
def _reading(principal: str) -> Iterator[tuple[Deployment, AuditLog]]:
    """The deployment and its audit log read under ReadAudit for ``principal`` (a denial is audited)."""
    from eventward._internal.audit.log import AuditLog

    with deployment(principal) as dep:
        log = AuditLog.open(dep.home, authorizer=dep.policy, principal=principal)
        try:
            log.size()
            yield dep, log
        finally:
            log.close()


def _table(rows: list[tuple[int | None, Alert]]) -> None:
    from eventward._internal.monitor.alerts import as_json

    table = Table()
    for name in ("#", "time", "rule", "severity", "resource", "reason", "details"):
        table.add_column(name, overflow="fold")
    for index, a in rows:
        d = as_json(index, a)
        details = " ".join(f"{k}={v}" for k, v in a.meta.items())
        cells = ("-" if index is None else str(index), d["time"], a.rule, a.severity, a.resource, a.reason, details)
        table.add_row(*(Text(c) for c in cells))
    common.console.print(table)


def monitor(
    rules: Path = _RULES,
    record: bool = typer.Option(False, "--record", help="Record alerts not recorded yet (as monitor.alert)."),
    principal: str = _AS,
    as_json_: bool = _JSON,
) -> None:
    """Run the anomaly rules over the audit log; list the alerts (exit 1 when there are any)."""
    from eventward._internal.monitor.alerts import as_json, new_alerts, record_alert, recorded_alerts
    from eventward._internal.monitor.rules import RuleEngine, load_rules

    engine = RuleEngine(load_rules(rules))
    with _reading(principal) as (dep, log):
        found: list[Alert] = []
        pos = 0
        while batch := log.since(pos, 4096):
            found += engine.feed_all(batch)
            pos = batch[-1].index + 1
        fresh = new_alerts((a for _, a in recorded_alerts(log)), found) if record else []
        for a in fresh:
            record_alert(dep.audit, a)
        dep.audit.flush()
    if as_json_:
        common.emit_json({"alerts": [as_json(None, a) for a in found], "recorded": len(fresh)})
    else:
        _table([(None, a) for a in found])
        if record:
            common.err_console.print(f"{len(fresh)} new alert(s) recorded", highlight=False)
    if found:
        raise typer.Exit(1)


def alerts(
    n: int = typer.Option(100, "-n", help="How many, newest last."),
    principal: str = _AS,
    as_json_: bool = _JSON,
) -> None:
    """List recorded alerts (raised by serve's live monitor or by monitor --record)."""
    from eventward._internal.monitor.alerts import as_json, recorded_alerts

    with _reading(principal) as (_, log):
        rows = recorded_alerts(log)[-max(n, 0):] if n else []
    if as_json_:
        common.emit_json({"alerts": [as_json(i, a) for i, a in rows]})
        return
    _table([(i, a) for i, a in rows])


def lag(
    threshold: int = typer.Option(None, "--threshold", min=0,
                                  help="Exit 1 when a group is this many events behind or more."),
    principal: str = _AS,
    as_json_: bool = _JSON,
) -> None:
    """Consumer lag per group and stream (embedded log and NATS)."""
    from eventward._internal.audit.log import AUDIT_RESOURCE
    from eventward._internal.monitor.lag import group_lags
    from eventward._internal.policy.base import READ_AUDIT

    with deployment(principal) as dep:
        authorize(dep, principal, READ_AUDIT, AUDIT_RESOURCE)
        lags = group_lags(dep.transport)
    behind = [g for g in lags if threshold is not None and g.lag >= threshold]
    if as_json_:
        common.emit_json({"groups": [
            {"group": g.group, "stream": g.stream, "committed": g.committed, "end": g.end, "lag": g.lag,
             "behind": g in behind} for g in lags]})
    else:
        table = Table("group", "stream", "committed", "end", "lag (events)")
        for g in lags:
            style = "bold red" if g in behind else None
            table.add_row(Text(g.group), Text(g.stream), str(g.committed), str(g.end), Text(str(g.lag), style=style))
        common.console.print(table)
    if behind:
        raise typer.Exit(1)


def siem(
    to: str | None = typer.Option(
        None, "--to", help="'-' (stdout; the default without --syslog), a file (appended) or nats://HOST:PORT/SUBJECT."
    ),
    fmt: str = typer.Option(
        "ocsf", "--format", help="What --to gets: ocsf (JSON lines) or syslog (RFC 5424 lines carrying the OCSF JSON)."
    ),
    syslog_url: str | None = typer.Option(
        None, "--syslog",
        help="Send RFC 5424 messages to a collector: udp://HOST:PORT (RFC 5426) or tcp://HOST:PORT (RFC 6587).",
    ),
    facility: int = typer.Option(13, "--facility", min=0, max=23, help="Syslog facility (13: log audit)."),
    start: int = typer.Option(0, "--from", min=0, help="First audit index to export."),
    alerts_only: bool = typer.Option(False, "--alerts-only", help="Only alerts (Detection Findings)."),
    principal: str = _AS,
) -> None:
    """Export audit records and alerts as OCSF (API Activity 6003, Detection Finding 2004): JSON
    lines, or RFC 5424 syslog messages to a file, stdout or a collector (docs/monitoring.md)."""
    import orjson

    from eventward._internal.monitor.ocsf import OCSF_VERSION, Sink, to_ocsf
    from eventward._internal.monitor.rules import ALERT_ACTION
    from eventward._internal.monitor.syslog import Collector, Formatter

    if fmt not in ("ocsf", "syslog"):
        raise InputError("--format must be ocsf or syslog")
    syslog = Formatter(facility=facility) if fmt == "syslog" or syslog_url else None
    collector = Collector(syslog_url) if syslog_url else None  # checked before anything is read
    if to is None and collector is None:
        to = "-"
    sink = Sink(to) if to is not None else None
    n = 0
    try:
        with _reading(principal) as (_, log):
            if collector is not None:
                collector.connect()
            pos = start
            while batch := log.since(pos, 4096):
                for r in batch:
                    if alerts_only and r.action != ALERT_ACTION:
                        continue
                    doc = to_ocsf(r)
                    message = syslog.message(doc) if syslog is not None else b""
                    if sink is not None:
                        sink.write((message if fmt == "syslog" else orjson.dumps(doc)) + b"\n")
                    if collector is not None:
                        collector.send(message)
                    n += 1
                pos = batch[-1].index + 1
    finally:
        if sink is not None:
            sink.close()
        if collector is not None:
            collector.close()
    where = " and ".join(w for w in (to, syslog_url) if w)
    common.err_console.print(f"{n} OCSF {OCSF_VERSION} event(s) exported to {where}", highlight=False)
