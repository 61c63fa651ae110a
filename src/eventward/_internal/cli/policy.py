"""``eventward policy``: init, apply, show, versions, explain, compile, diff, rollback.

Changes go through PolicyStore (validated, authorized, versioned, audited); explain and
compile only read. Output never includes context values beyond the event type. ``policy
init`` applies the same bootstrap as ``eventward init`` (which also creates the keys), for
a home that has no policy yet. ``--as`` is asserted, not authenticated: the CLI runs with
the home's key material, so it is an operator tool; authenticated access for services is the
gateway (mTLS/JWT).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin
from eventward.errors import InputError, PolicyError

if TYPE_CHECKING:
    from eventward._internal.home import Home
    from eventward._internal.policy.store import PolicyVersion

POLICY_FILE = "policy.yaml"
TARGETS = ("nats", "kafka")

policy_app = typer.Typer(
    help="Deny-by-default Cedar authorization: apply, explain, compile.", no_args_is_help=True
)

_AS = as_admin()
_JSON = common.json_option()


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version_json(v: PolicyVersion, active: bool | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": v.version, "applied": _when(v.created), "by": v.principal, "sha256": v.sha256}
    if active is not None:
        doc["active"] = active
    return doc


def default_policy(admin: str) -> str:
    """The same bootstrap ``eventward init`` applies: deny everything except administration by one admin."""
    from eventward._internal.deployment import BOOTSTRAP_POLICY

    return (
        "# eventward policy: deny by default. Edit, then 'eventward policy apply policy.yaml'.\n"
        + BOOTSTRAP_POLICY.format(admin=admin)
    )


def write_working_copy(home: Home, text: str, cedar_files: Mapping[str, str]) -> Path:
    """Copy the applied policy into <home>/policy/ for editing (never over an edited copy)."""
    target = home.policy_dir / POLICY_FILE
    for path, content in [(target, text), *((home.policy_dir / n, t) for n, t in cedar_files.items())]:
        if not path.exists():
            path.write_text(content)
    return target


def read_cedar_dir(directory: Path | None) -> dict[str, str]:
    """Hand-written ``*.cedar`` files of a directory, by file name."""
    if directory is None or not directory.is_dir():
        return {}
    return {p.name: read_policy_file(p) for p in sorted(directory.glob("*.cedar"))}


def parse_resource(text: str) -> tuple[str, str]:
    """``Topic::orders`` -> ("Topic", "orders"); the kind is case-insensitive."""
    from eventward._internal.policy.spec import KINDS

    kind, sep, rid = text.partition("::")
    by_lower = {k.lower(): k for k in KINDS}
    if not sep or not rid or kind.lower() not in by_lower:
        raise InputError(
            f"resource must look like Kind::id with Kind one of {', '.join(KINDS)}", field="resource"
        )
    return by_lower[kind.lower()], rid


def read_policy_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{path.name} is not UTF-8 text", path=str(path)) from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", path=str(path)) from None


@policy_app.command("init")
def init_cmd(
    file: Path = typer.Argument(None, help="Policy YAML to start with (default: deny all but the admin)."),
    admin: str = typer.Option("admin", "--admin", help="Policy admin of the default policy."),
    cedar: Path = typer.Option(None, "--cedar", help="Directory of *.cedar files [default: next to FILE]."),
) -> None:
    """Apply the first policy (no prior policy needed); copy it into <home>/policy/ for editing."""
    from eventward._internal.audit import AuditLog
    from eventward._internal.policy.store import PolicyStore

    home = common.home().ensure()
    text = read_policy_file(file) if file else default_policy(admin)
    files = read_cedar_dir(cedar if cedar is not None else file.parent if file else None)
    with AuditLog.open(home) as audit:
        store = PolicyStore.open(home, audit=audit)
        try:
            version = store.init(text, files)
        finally:
            store.close()
    target = write_working_copy(home, text, files)
    common.console.print(f"policy version {version} active; edit {target} and apply it")


@policy_app.command(
    "apply",
    epilog=common.examples(
        "eventward policy apply policy.yaml --as admin",
        "eventward policy diff 1 2 --target kafka",
    ),
)
def apply_cmd(
    file: Path = typer.Argument(..., help="Policy YAML."),
    cedar: Path = typer.Option(None, "--cedar", help="Directory of *.cedar files [default: next to FILE]."),
    principal: str = _AS,
) -> None:
    """Validate, authorize (ManagePolicy), store and activate a new policy version."""
    from eventward._internal.audit import AuditLog
    from eventward._internal.policy.store import PolicyStore

    home = common.home().require()
    files = read_cedar_dir(cedar if cedar is not None else file.parent)
    with AuditLog.open(home) as audit:
        store = PolicyStore.open(home, audit=audit)
        try:
            version = store.apply(principal, read_policy_file(file), files)
        finally:
            store.close()
    common.console.print(f"policy version {version} active ({len(files)} Cedar file(s))")


@policy_app.command("rollback")
def rollback_cmd(
    version: int = typer.Argument(..., help="Version to restore."), principal: str = _AS
) -> None:
    """Re-apply an earlier version as a new version (needs ManagePolicy)."""
    from eventward._internal.audit import AuditLog
    from eventward._internal.policy.store import PolicyStore

    home = common.home().require()
    with AuditLog.open(home) as audit:
        store = PolicyStore.open(home, audit=audit)
        try:
            new = store.rollback(principal, version)
        finally:
            store.close()
    common.console.print(f"policy version {new} active (copy of version {version})")


@policy_app.command("show")
def show_cmd(
    version: int = typer.Option(None, "--version", help="Version to show [default: active]."),
    compiled: bool = typer.Option(False, "--compiled", help="Show the compiled Cedar policy set."),
    as_json: bool = _JSON,
) -> None:
    """Print a policy version: its YAML, hand-written Cedar files, or the compiled Cedar."""
    from eventward._internal.policy.store import PolicyStore, build

    store = PolicyStore.open(common.home().require())
    try:
        v = store.get(version)
    finally:
        store.close()
    compiled_text = build(v.yaml, v.cedar)[1].text if compiled else None
    if as_json:
        doc = _version_json(v)
        doc.update(yaml=v.yaml, cedar=dict(v.cedar))
        if compiled_text is not None:
            doc["compiled"] = compiled_text
        common.emit_json(doc)
        return
    common.console.print(f"[bold]version {v.version}[/] applied by {v.principal} sha256 {v.sha256[:16]}")
    if compiled_text is not None:
        common.print_code(compiled_text, "rust")
        return
    common.print_code(v.yaml, "yaml")
    for name, text in v.cedar.items():
        common.console.print(f"[bold]{name}[/]")
        common.print_code(text, "rust")


@policy_app.command("versions")
def versions_cmd(as_json: bool = _JSON) -> None:
    """List every stored version; the active one is marked."""
    from eventward._internal.policy.store import PolicyStore

    store = PolicyStore.open(common.home().require())
    try:
        rows = store.versions()
    finally:
        store.close()
    if as_json:
        common.emit_json({"versions": [_version_json(v, active) for v, active in rows]})
        return
    table = Table("version", "active", "applied", "by", "sha256")
    for v, active in rows:
        when = dt.datetime.fromtimestamp(v.created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        table.add_row(str(v.version), "*" if active else "", when, v.principal, v.sha256[:16])
    common.console.print(table)


@policy_app.command(
    "explain",
    epilog=common.examples(
        "eventward policy explain analytics-svc decrypt Class::pii",
        "eventward policy explain shipping-svc subscribe Topic::orders --event-type OrderPlaced --json",
    ),
)
def explain_cmd(
    principal: str = typer.Argument(..., metavar="PRINCIPAL"),
    action: str = typer.Argument(..., help="e.g. subscribe, Subscribe, approve_schema"),
    resource: str = typer.Argument(..., help="Kind::id, e.g. Topic::orders, Class::pii"),
    event_type: str = typer.Option(None, "--event-type", help="Event type (publish/subscribe)."),
    context: str = typer.Option(None, "--context", metavar="JSON", help='Context, e.g. {"zone": "internal"}.'),
    as_json: bool = _JSON,
) -> None:
    """Decide one request against the active policy and say which policies decided and what is missing."""
    from eventward._internal.policy.engine import PolicyEngine
    from eventward._internal.policy.spec import parse_action

    ctx: dict[str, object] = {}
    if context:
        try:
            ctx = json.loads(context)
        except json.JSONDecodeError:
            raise InputError("--context is not valid JSON", field="context") from None
        if not isinstance(ctx, dict):
            raise InputError("--context must be a JSON object", field="context")
    if event_type:
        ctx["event_type"] = event_type
    engine = PolicyEngine.open(common.home().require())
    try:
        d = engine.explain(principal, parse_action(action), parse_resource(resource), ctx)
    finally:
        engine.close()
    if as_json:
        common.emit_json({
            "allowed": d.allowed,
            "principal": d.principal,
            "action": d.action,
            "resource": {"kind": d.resource[0], "id": d.resource[1]},
            "policies": list(d.policies),
            "missing": d.missing,
            "errors": list(d.errors),
            "explanation": d.explain(),
            "policy_version": engine.version,
        })
        return
    style = "green" if d.allowed else "red"
    first, *rest = d.explain().splitlines()
    common.console.print(f"[bold {style}]{first}[/]", highlight=False)
    for line in rest:
        common.console.print(line, highlight=False, markup=False)
    common.console.print(f"policy version {engine.version}", style="dim")


def _compile(v: PolicyVersion, target: str) -> str:
    """One version compiled for one broker, by the compilers ``policy compile`` uses."""
    from eventward._internal.policy.store import build

    spec, compiled = build(v.yaml, v.cedar)
    if target == "nats":
        from eventward._internal.policy.compile_nats import compile_nats  # loads the NATS transport's names

        return compile_nats(spec, compiled)
    from eventward._internal.policy.compile_kafka import compile_kafka

    return compile_kafka(spec, compiled)


def _stored(*versions: int | None) -> list[PolicyVersion]:
    from eventward._internal.policy.store import PolicyStore

    store = PolicyStore.open(common.home().require())
    try:
        return [store.get(v) for v in versions]
    finally:
        store.close()


@policy_app.command(
    "compile",
    epilog=common.examples(
        "eventward policy compile --target kafka > acls.sh",
        "eventward policy compile --target nats --out auth.conf",
    ),
)
def compile_cmd(
    target: str = typer.Option(..., "--target", metavar="nats|kafka", help="Broker to compile for."),
    out: Path = typer.Option(None, "--out", help="Write to this file instead of stdout."),
    as_json: bool = _JSON,
) -> None:
    """Compile the active policy to broker-native permissions (what the broker cannot express is listed)."""
    if target not in TARGETS:
        raise InputError(f"--target must be one of {', '.join(TARGETS)}", field="target")
    (v,) = _stored(None)
    text = _compile(v, target)
    if as_json:
        common.emit_json({"target": target, "policy_version": v.version, "text": text})
        if out is not None:
            out.write_text(text)
        return
    if out is None:
        common.console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        out.write_text(text)
        common.console.print(f"wrote {out} ({target}, policy version {v.version})")


@policy_app.command(
    "diff",
    epilog=common.examples(
        "eventward policy diff 3 4 --target kafka > migrate-acls.sh",
        "eventward policy diff 3 --json",
    ),
)
def diff_cmd(
    old: int = typer.Argument(..., metavar="V1", help="The version the brokers run now."),
    new: int = typer.Argument(None, metavar="V2", help="The version to move to [default: active]."),
    target: str = typer.Option("all", "--target", metavar="nats|kafka|all", help="Which broker delta."),
    as_json: bool = _JSON,
) -> None:
    """Broker delta from V1 to V2: kafka-acls.sh --add/--remove lines and NATS permission changes."""
    from eventward._internal.policy import diff

    if target not in (*TARGETS, "all"):
        raise InputError("--target must be nats, kafka or all", field="target")
    v1, v2 = _stored(old, new)
    targets = TARGETS if target == "all" else (target,)
    texts = {t: (_compile(v1, t), _compile(v2, t)) for t in targets}
    kafka = diff.kafka_delta(*texts["kafka"]) if "kafka" in texts else None
    nats = diff.nats_delta(*texts["nats"]) if "nats" in texts else None
    notes = {t: diff.notes_delta(*pair) for t, pair in texts.items()}
    if as_json:
        common.emit_json({"from": v1.version, "to": v2.version, **diff.delta_json(kafka, nats, notes)})
        return
    out = common.console
    if kafka is not None:
        script = kafka.script()
        out.out(f"# Kafka ACL changes from policy version {v1.version} to {v2.version}"
                f" ({len(kafka.add)} to add, {len(kafka.remove)} to remove)", highlight=False)
        out.out("\n".join(script) if script else "# (none)", highlight=False)
    if nats is not None:
        lines = diff.nats_lines(nats)
        out.out(f"# NATS permission changes from policy version {v1.version} to {v2.version}"
                " (apply: eventward policy compile --target nats, then reload nats-server)", highlight=False)
        out.out("\n".join(f"# {x}" for x in lines) if lines else "# (none)", highlight=False)
    for t, n in notes.items():
        for sign, key in (("-", "removed"), ("+", "added")):
            for note in n[key]:
                out.out(f"# {t} note {sign} {note}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``eventward policy ...`` to the root app."""
    app.add_typer(policy_app, name="policy")
