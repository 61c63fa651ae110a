"""``eventward policy``: init, apply, show, versions, explain, compile, rollback.

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

import typer
from rich.syntax import Syntax
from rich.table import Table

from eventward.audit import AuditLog
from eventward.cli import common
from eventward.cli.context import as_admin
from eventward.deployment import BOOTSTRAP_POLICY
from eventward.errors import InputError
from eventward.home import Home
from eventward.policy.engine import PolicyEngine
from eventward.policy.spec import KINDS, parse_action
from eventward.policy.store import PolicyStore, build

POLICY_FILE = "policy.yaml"
TARGETS = ("nats", "kafka")

policy_app = typer.Typer(
    help="Deny-by-default Cedar authorization: apply, explain, compile.", no_args_is_help=True
)

_AS = as_admin()


def default_policy(admin: str) -> str:
    """The same bootstrap ``eventward init`` applies: deny everything except administration by one admin."""
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
    return {p.name: p.read_text() for p in sorted(directory.glob("*.cedar"))}


def parse_resource(text: str) -> tuple[str, str]:
    """``Topic::orders`` -> ("Topic", "orders"); the kind is case-insensitive."""
    kind, sep, rid = text.partition("::")
    by_lower = {k.lower(): k for k in KINDS}
    if not sep or not rid or kind.lower() not in by_lower:
        raise InputError(
            f"resource must look like Kind::id with Kind one of {', '.join(KINDS)}", field="resource"
        )
    return by_lower[kind.lower()], rid


def read_policy_file(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", path=str(path)) from None


@policy_app.command("init")
def init_cmd(
    file: Path = typer.Argument(None, help="Policy YAML to start with (default: deny all but the admin)."),
    admin: str = typer.Option("admin", "--admin", help="Policy admin of the default policy."),
    cedar: Path = typer.Option(None, "--cedar", help="Directory of *.cedar files [default: next to FILE]."),
) -> None:
    """Apply the first policy (no prior policy needed); copy it into <home>/policy/ for editing."""
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


@policy_app.command("apply")
def apply_cmd(
    file: Path = typer.Argument(..., help="Policy YAML."),
    cedar: Path = typer.Option(None, "--cedar", help="Directory of *.cedar files [default: next to FILE]."),
    principal: str = _AS,
) -> None:
    """Validate, authorize (ManagePolicy), store and activate a new policy version."""
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
) -> None:
    """Print a policy version: its YAML, hand-written Cedar files, or the compiled Cedar."""
    store = PolicyStore.open(common.home().require())
    try:
        v = store.get(version)
    finally:
        store.close()
    common.console.print(f"[bold]version {v.version}[/] applied by {v.principal} sha256 {v.sha256[:16]}")
    if compiled:
        _, c = build(v.yaml, v.cedar)
        common.console.print(Syntax(c.text, "rust", word_wrap=True))
        return
    common.console.print(Syntax(v.yaml, "yaml"))
    for name, text in v.cedar.items():
        common.console.print(f"[bold]{name}[/]")
        common.console.print(Syntax(text, "rust", word_wrap=True))


@policy_app.command("versions")
def versions_cmd() -> None:
    """List every stored version; the active one is marked."""
    store = PolicyStore.open(common.home().require())
    try:
        rows = store.versions()
    finally:
        store.close()
    table = Table("version", "active", "applied", "by", "sha256")
    for v, active in rows:
        when = dt.datetime.fromtimestamp(v.created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        table.add_row(str(v.version), "*" if active else "", when, v.principal, v.sha256[:16])
    common.console.print(table)


@policy_app.command("explain")
def explain_cmd(
    principal: str = typer.Argument(...),
    action: str = typer.Argument(..., help="e.g. subscribe, Subscribe, approve_schema"),
    resource: str = typer.Argument(..., help="Kind::id, e.g. Topic::orders, Class::pii"),
    event_type: str = typer.Option(None, "--event-type", help="Event type (publish/subscribe)."),
    context: str = typer.Option(None, "--context", help='Context JSON, e.g. {"zone": "internal"}.'),
) -> None:
    """Decide one request against the active policy and say which policies decided and what is missing."""
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
    style = "green" if d.allowed else "red"
    first, *rest = d.explain().splitlines()
    common.console.print(f"[bold {style}]{first}[/]", highlight=False)
    for line in rest:
        common.console.print(line, highlight=False, markup=False)
    common.console.print(f"policy version {engine.version}", style="dim")


@policy_app.command("compile")
def compile_cmd(
    target: str = typer.Option(..., "--target", help="nats or kafka"),
    out: Path = typer.Option(None, "--out", help="Write to this file instead of stdout."),
) -> None:
    """Compile the active policy to broker-native permissions (what the broker cannot express is listed)."""
    if target not in TARGETS:
        raise InputError(f"--target must be one of {', '.join(TARGETS)}", field="target")
    store = PolicyStore.open(common.home().require())
    try:
        v = store.get()
    finally:
        store.close()
    spec, compiled = build(v.yaml, v.cedar)
    if target == "nats":
        from eventward.policy.compile_nats import compile_nats  # loads the NATS transport's names

        text = compile_nats(spec, compiled)
    else:
        from eventward.policy.compile_kafka import compile_kafka

        text = compile_kafka(spec, compiled)
    if out is None:
        common.console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        out.write_text(text)
        common.console.print(f"wrote {out} ({target}, policy version {v.version})")


def register(app: typer.Typer) -> None:
    """Add ``eventward policy ...`` to the root app."""
    app.add_typer(policy_app, name="policy")
