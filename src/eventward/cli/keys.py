"""Key commands: ``init``, ``keys rotate|status``, ``forget``, ``hold``, ``release``.

The subject id given to ``forget``/``hold``/``release`` is hashed at once and never printed;
pass ``-`` to read it from stdin and keep it out of shell history and process lists.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventward.audit.base import AuditSink, NullAudit
from eventward.cli import common
from eventward.errors import ConfigError, InputError
from eventward.home import Home
from eventward.keys.kms.local import MODE_PASSPHRASE, LocalKMS
from eventward.keys.service import KeyService, erasures_log_path
from eventward.policy.base import DECRYPT, FORGET, HOLD, ROTATE_KEYS, AllowList, Authorizer

ADMIN = "admin"
ADMINS_ENV = "EVENTWARD_ADMINS"  # extra comma-separated admin principals
PASSPHRASE_ENV = "EVENTWARD_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret

keys_app = typer.Typer(help="Key-encryption keys: rotation and status.", no_args_is_help=True)

_AS = typer.Option(ADMIN, "--as", help="Principal the command acts as.")
_PASS = typer.Option(
    None, "--passphrase-env", help=f"Environment variable holding the keyring passphrase [{PASSPHRASE_ENV}]."
)


def cli_authorizer(home: Home) -> Authorizer:
    """Until the policy engine is wired in: ``admin`` (plus $EVENTWARD_ADMINS) may do every key
    operation on everything; anyone else is denied. The one place to swap for the policy engine."""
    admins = {ADMIN} | {p.strip() for p in os.environ.get(ADMINS_ENV, "").split(",") if p.strip()}
    grants = AllowList()
    for p in admins:
        grants.grant(p, DECRYPT, ("Class", "*"))
        grants.grant(p, ROTATE_KEYS, ("Class", "*"))
        grants.grant(p, FORGET, ("Subject", "*"))
        grants.grant(p, HOLD, ("Subject", "*"))
    return grants


def cli_audit(home: Home) -> AuditSink:
    """Where key events go from the CLI; the one place to swap for the deployment's audit log."""
    return NullAudit()


def _passphrase(var: str | None) -> str | None:
    name = var or PASSPHRASE_ENV
    value = os.environ.get(name)
    if var and not value:
        raise ConfigError(f"environment variable {name} is not set or empty")
    return value or None


def open_keys(home: Home, passphrase_env: str | None = None) -> KeyService:
    """The deployment's KeyService as the CLI sees it (shared with other commands, e.g. demo)."""
    home.require()
    passphrase = None
    if home.keyring.exists() and LocalKMS.header_mode(home.keyring) == MODE_PASSPHRASE:
        passphrase = _passphrase(passphrase_env)
        if passphrase is None:
            raise ConfigError(
                f"the keyring is passphrase-protected: set {PASSPHRASE_ENV} or --passphrase-env"
            )
    return KeyService.open(
        home, authorizer=cli_authorizer(home), audit=cli_audit(home), passphrase=passphrase
    )


def _subject(arg: str) -> str:
    if arg != "-":
        return arg
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise InputError("no data-subject id on stdin")
    return value


def init(passphrase_env: str | None = _PASS) -> None:
    """Create the deployment home: master key (0600) or passphrase keyring, keyring, key store."""
    home = common.home()
    passphrase = _passphrase(passphrase_env) if passphrase_env else None
    with KeyService.init(
        home, authorizer=cli_authorizer(home), audit=cli_audit(home), passphrase=passphrase
    ) as svc:
        st = svc.status()
    out = common.console
    out.print(f"[bold green]initialized[/] {home.root}")
    if passphrase is None:
        out.print(f"  master key   {home.master_key} (0600, 32 random bytes)")
    else:
        out.print(f"  master key   derived from ${passphrase_env} with scrypt (salt in the keyring header)")
    keks = ", ".join(c.kek_id for c in st.classes)
    out.print(f"  keyring      {home.keyring} (AES-256-GCM; KEKs {keks})")
    out.print(f"  key store    {home.keys_db} (SQLite WAL, secure_delete)")
    out.print(f"  ledger       {erasures_log_path(home)} (erasure ledger copy)")


def forget(
    subject: str = typer.Argument(..., help="Data-subject id, or - to read it from stdin."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the audit log)."),
    principal: str = _AS,
    passphrase_env: str | None = _PASS,
) -> None:
    """Crypto-shred a data subject: destroy every key of theirs, in every class."""
    home = common.home()
    with open_keys(home, passphrase_env) as svc:
        r = svc.forget(_subject(subject), principal=principal, reason=reason)
    t = Table(title="erasure receipt", show_header=False)
    t.add_row("subject (hash)", r.subject_hash)
    t.add_row("classes", ", ".join(r.classes) or "-")
    t.add_row("keys destroyed", str(r.destroyed))
    t.add_row("KEK epochs", ", ".join(f"{c}.v{v}" for c, v in sorted(r.kek_epochs.items())) or "-")
    t.add_row("store purged", "yes" if r.purged else "no (a reader held the WAL; retried at next forget)")
    common.console.print(t)
    common.console.print(r.statement(), highlight=False)


def hold(
    subject: str = typer.Argument(..., help="Data-subject id, or - to read it from stdin."),
    reason: str = typer.Option(..., "--reason", help="Why (case, order); required."),
    principal: str = _AS,
    passphrase_env: str | None = _PASS,
) -> None:
    """Place a legal hold: the subject cannot be forgotten until released."""
    with open_keys(common.home(), passphrase_env) as svc:
        s = _subject(subject)
        svc.hold(s, principal=principal, reason=reason)
        common.console.print(f"legal hold placed on subject {svc.subject_hash(s)}")


def release(
    subject: str = typer.Argument(..., help="Data-subject id, or - to read it from stdin."),
    principal: str = _AS,
    passphrase_env: str | None = _PASS,
) -> None:
    """Release a legal hold."""
    with open_keys(common.home(), passphrase_env) as svc:
        s = _subject(subject)
        released = svc.release(s, principal=principal)
        h = svc.subject_hash(s)
    common.console.print(f"legal hold released on subject {h}" if released else f"subject {h} was not held")


@keys_app.command("rotate")
def rotate(
    cls: str = typer.Option(..., "--class", help="Sensitivity class whose KEK to rotate."),
    principal: str = _AS,
    passphrase_env: str | None = _PASS,
) -> None:
    """New KEK version, every DEK of the class re-wrapped, the old version destroyed."""
    with open_keys(common.home(), passphrase_env) as svc, Progress(
        TextColumn("re-wrapping {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=common.console,
    ) as bar:
        task = bar.add_task(cls, total=None)
        report = svc.rotate_kek(cls, principal=principal,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    common.console.print(
        f"{cls}: now {report.new_kek_id}; re-wrapped {report.rewrapped} key(s) in {report.seconds:.2f}s; "
        f"destroyed {', '.join(report.destroyed_kek_ids) or 'nothing'}",
        highlight=False,
    )
    if report.failed:
        common.err_console.print(
            f"[yellow]warning[/]: {report.failed} key(s) failed authentication and were left under their "
            "old KEK (kept, not destroyed); see the log"
        )


@keys_app.command("status")
def status(passphrase_env: str | None = _PASS) -> None:
    """Classes, KEK versions, key counts, holds and erasures."""
    with open_keys(common.home(), passphrase_env) as svc:
        st = svc.status()
    t = Table(title="keys")
    for col in ("class", "KEK", "live versions", "destroyed", "DEKs", "subjects", "erased keys"):
        t.add_column(col, justify="right" if col in ("DEKs", "subjects", "erased keys") else "left")
    for c in st.classes:
        t.add_row(c.cls, c.kek_id, ", ".join(c.live_keks), ", ".join(c.destroyed_keks) or "-",
                  str(c.deks), str(c.subjects), str(c.erased_keys))
    common.console.print(t)
    common.console.print(
        f"legal holds: {st.holds}   erasures: {st.erasures}   revocation epoch: {st.revocation_epoch}"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("init")(init)
    app.command("forget")(forget)
    app.command("hold")(hold)
    app.command("release")(release)
    app.add_typer(keys_app, name="keys")
