"""Deployment and key commands: ``init``, ``forget``, ``hold``, ``release``, ``keys rotate|status``.

``init`` creates a complete home (Deployment.init); every other command opens it as one
Deployment and acts ``--as`` a principal (default ``admin``) under the home's Cedar policy,
with the audit log recording what it did. ``--as`` is asserted, not authenticated: the CLI
runs with the home's key material, so it is an operator tool; authenticated access for
services is the gateway (mTLS/JWT). A passphrase-protected keyring is opened with
``EVENTWARD_PASSPHRASE``.

The subject id given to ``forget``/``hold``/``release`` is hashed at once and never printed;
pass ``-`` to read it from stdin and keep it out of shell history and process lists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventward._internal.cli import common
from eventward._internal.cli.context import ADMIN, as_admin, authorize, deployment
from eventward.errors import ConfigError, ConflictError, InputError

if TYPE_CHECKING:
    from eventward._internal.home import Home

keys_app = typer.Typer(help="Key-encryption keys: rotation and status.", no_args_is_help=True)

_AS = as_admin()
_JSON = common.json_option()


def _subject(arg: str) -> str:
    if arg != "-":
        return arg
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise InputError("no data-subject id on stdin")
    return value


def _initialized(home: Home) -> bool:
    from eventward._internal.policy.store import PolicyStore

    if home.keyring.exists() or home.keys_db.exists():
        return True
    if not home.policy_dir.is_dir():
        return False
    store = PolicyStore.open(home)
    try:
        return store.active_version() > 0
    finally:
        store.close()


def _passphrase(var: str | None) -> str | None:
    if not var:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"environment variable {var} is not set or empty")
    return value


def init(
    admin: str = typer.Option(ADMIN, "--admin", help="Bootstrap administrator (ignored with --policy)."),
    passphrase_env: str = typer.Option(
        None, "--passphrase-env", help="Protect the keyring with the passphrase in this environment variable."
    ),
    policy: Path = typer.Option(
        None, "--policy", help="First policy YAML instead of the bootstrap (*.cedar files next to it too)."
    ),
    as_json: bool = _JSON,
) -> None:
    """Create a deployment home: keyring, key store, audit log and key, first policy. Prints no secrets."""
    from eventward._internal.cli.policy import read_cedar_dir, read_policy_file, write_working_copy
    from eventward._internal.deployment import Deployment
    from eventward._internal.keys.service import erasures_log_path
    from eventward._internal.policy.base import MANAGE_POLICY
    from eventward._internal.policy.store import POLICY_RESOURCE, build

    home = common.home()
    if home.root.is_dir() and _initialized(home):
        raise ConflictError(
            f"{home.root} is already a deployment home; change its policy with 'eventward policy apply'"
        )
    passphrase = _passphrase(passphrase_env)
    policy_yaml = read_policy_file(policy) if policy else None
    cedar = read_cedar_dir(policy.parent) if policy else {}
    if policy_yaml is not None:
        build(policy_yaml, cedar)  # an invalid policy is refused before anything is written
    with Deployment.init(
        home, admin=admin, policy_yaml=policy_yaml, passphrase=passphrase, cedar_files=cedar
    ) as dep:
        applied = dep.policy.store.get()
        working = write_working_copy(home, applied.yaml, applied.cedar)
        admins = [
            p for p in dep.policy.principals()
            if dep.policy.explain(p, MANAGE_POLICY, POLICY_RESOURCE).allowed
        ]
        keks = ", ".join(c.kek_id for c in dep.keys.status().classes)
        vkey = dep.audit.verifier.vkey()
        backend = dep.config.kms.backend
        transport = dep.config.transport
    rows = [("config", f"{home.config} (transport {transport})")]
    if backend != "local":
        where = {"pkcs11": "the PKCS#11 token", "transit": "Vault/OpenBao Transit", "aws": "AWS KMS"}.get(
            backend, backend)
        rows.append(("KEKs", f"in {where} ({keks})"))
    else:
        rows.append((
            "master key",
            f"{home.master_key} (0600, 32 random bytes)" if passphrase is None
            else f"derived from ${passphrase_env} with scrypt (salt in the keyring header)",
        ))
        rows.append(("keyring", f"{home.keyring} (AES-256-GCM; KEKs {keks})"))
    rows += [
        ("key store", f"{home.keys_db} (SQLite WAL, secure_delete)"),
        ("ledger", f"{erasures_log_path(home)} (erasure ledger copy)"),
        ("audit log", f"{home.audit_db} (signing key {home.audit_key}, 0600)"),
        ("policy", f"version {applied.version} active; working copy {working}"),
        ("admin", ", ".join(admins)),
    ]
    if as_json:
        common.emit_json({
            "home": str(home.root),
            "config": str(home.config),
            "transport": transport,
            "kms": backend,
            "master_key": str(home.master_key) if backend == "local" and passphrase is None else None,
            "keyring": str(home.keyring) if backend == "local" else None,
            "key_store": str(home.keys_db),
            "audit_log": str(home.audit_db),
            "audit_key": str(home.audit_key),
            "policy_version": applied.version,
            "policy_working_copy": str(working),
            "admins": admins,
            "audit_public_key": vkey,
        })
        return
    out = common.console
    out.print(f"[bold green]initialized[/] {escape(str(home.root))}", highlight=False)
    for name, text in rows:
        out.print(f"  {name:<11}{text}", highlight=False, markup=False, soft_wrap=True)
    out.print("audit public key (publish it; verifiers need it):", highlight=False)
    out.print(vkey, highlight=False, markup=False, soft_wrap=True)
    if policy is None:
        out.print(f"next: write a policy and run 'eventward policy apply FILE --as {admin}'", highlight=False)


def forget(
    subject: str = typer.Argument(..., metavar="SUBJECT", help="Data-subject id, or - to read it from stdin."),
    reason: str = typer.Option(
        "",
        "--reason",
        help="A short reason code such as gdpr-art17 (lowercase letters, digits, '_.-'). "
        "Free text is never recorded: it is replaced by the generic code erasure-request.",
    ),
    now: bool = typer.Option(
        False, "--now", help="Close the KEK epoch at once: rotate the subject's classes and destroy the "
        "KEK versions that wrapped its keys, so residual copies are unrecoverable from now on."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Crypto-shred a data subject (every key, every class, its pseudonym) and log a signed erasure
    certificate; consumer groups are notified and acknowledge (eventward erasure status)."""
    from eventward._internal.deployment import is_reason_code

    with deployment(principal) as dep:
        code = reason if is_reason_code(reason) else "erasure-request"  # free text is never recorded
        done = dep.forget(_subject(subject), principal=principal, reason=code, close_epoch=now)
    r, cert = done.receipt, done.certificate
    if as_json:
        common.emit_json({
            "subject_hash": r.subject_hash,
            "nothing_to_erase": r.nothing_to_erase,
            "epoch_closed": r.epoch_closed(),
            "destroyed_keks": list(r.closed_keks),
            "classes": list(r.classes),
            "keys_destroyed": r.destroyed,
            "kek_epochs": dict(sorted(r.kek_epochs.items())),
            "store_purged": r.purged,
            "reason_code": cert.claims["reason_code"],
            "certificate_index": cert.index,
            "statement": r.statement(),
        })
        return
    t = Table(title="erasure receipt", show_header=False)
    t.add_row("subject (hash)", r.subject_hash)
    t.add_row("classes", ", ".join(r.classes) or "-")
    t.add_row("keys destroyed", str(r.destroyed))
    t.add_row("KEK epochs", ", ".join(f"{c}.v{v}" for c, v in sorted(r.kek_epochs.items())) or "-")
    if r.nothing_to_erase:
        t.add_row("outcome", "nothing to erase (never seen, or already forgotten)")
    t.add_row("store purged", "yes" if r.purged else "no (a reader held the WAL; retried at next forget)")
    if r.closed_keks:
        t.add_row("KEK versions destroyed", ", ".join(r.closed_keks))
    t.add_row("reason code", str(cert.claims["reason_code"]))
    common.console.print(t)
    common.console.print(r.statement(), highlight=False)
    common.console.print(
        f"erasure certificate: audit record {cert.index} "
        f"(eventward audit certificate {r.subject_hash} --hash)",
        highlight=False,
    )
    if reason and cert.claims["reason_code"] != reason:
        common.err_console.print("[yellow]note[/]: --reason was not a code; recorded as erasure-request")


def hold(
    subject: str = typer.Argument(..., help="Data-subject id, or - to read it from stdin."),
    reason: str = typer.Option(
        ..., "--reason", help="A short reason code such as case-2024-117; required. Free text is refused."
    ),
    principal: str = _AS,
) -> None:
    """Place a legal hold: the subject cannot be forgotten until released."""
    from eventward._internal.deployment import is_reason_code

    if not is_reason_code(reason):
        raise InputError("--reason must be a short code (lowercase letters, digits, '_.-'), not free text")
    with deployment(principal) as dep:
        s = _subject(subject)
        dep.keys.hold(s, principal=principal, reason=reason)
        common.console.print(f"legal hold placed on subject {dep.keys.subject_hash(s)}", highlight=False)


def release(
    subject: str = typer.Argument(..., help="Data-subject id, or - to read it from stdin."),
    principal: str = _AS,
) -> None:
    """Release a legal hold."""
    with deployment(principal) as dep:
        s = _subject(subject)
        released = dep.keys.release(s, principal=principal)
        h = dep.keys.subject_hash(s)
    common.console.print(
        f"legal hold released on subject {h}" if released else f"subject {h} was not held", highlight=False
    )


def _rotate_due(principal: str, as_json: bool) -> None:
    """Every class whose KEK epoch is older than keys.kek_max_age_days, rotated."""
    with deployment(principal) as dep:
        max_age = dep.config.keys.kek_max_age_days * 86_400.0
        reports = dep.keys.rotate_due(max_age, principal=principal)
    rows = [{"class": r.cls, "new_kek": r.new_kek_id, "rewrapped": r.rewrapped, "failed": r.failed,
             "destroyed": list(r.destroyed_kek_ids), "seconds": round(r.seconds, 3)} for r in reports]
    if as_json:
        common.emit_json({"rotated": rows})
        return
    if not rows:
        common.console.print("no KEK epoch is due", highlight=False)
    for r in reports:
        common.console.print(
            f"{r.cls}: now {r.new_kek_id}; re-wrapped {r.rewrapped}; destroyed "
            f"{', '.join(r.destroyed_kek_ids) or 'nothing'}", highlight=False)


@keys_app.command("rotate", epilog=common.examples("eventward keys rotate --class pii",
                                                   "eventward keys rotate --due --json"))
def rotate(
    cls: str = typer.Option(None, "--class", metavar="CLASS", help="Sensitivity class whose KEK to rotate."),
    due: bool = typer.Option(False, "--due", help="Rotate every class whose KEK is older than "
                             "keys.kek_max_age_days (eventward.yaml; default 90)."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """New KEK version, every DEK of the class re-wrapped, the old version destroyed (audited)."""
    if due == (cls is not None):
        raise InputError("give either --class CLASS or --due")
    if due:
        _rotate_due(principal, as_json)
        return
    with deployment(principal) as dep, Progress(
        TextColumn("re-wrapping {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=common.err_console, transient=True,
    ) as bar:
        task = bar.add_task(cls, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = dep.keys.rotate_kek(cls, principal=principal, progress=progress)
    if as_json:
        common.emit_json({"class": cls, "new_kek": report.new_kek_id, "rewrapped": report.rewrapped,
                          "failed": report.failed, "destroyed": list(report.destroyed_kek_ids),
                          "seconds": round(report.seconds, 3)})
        return
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


@keys_app.command("status", epilog=common.examples("eventward keys status", "eventward keys status --json"))
def status(principal: str = _AS, as_json: bool = _JSON) -> None:
    """Classes, KEK versions, key counts, holds and erasures (needs read_audit: it is audit metadata)."""
    from eventward._internal.audit.log import AUDIT_RESOURCE
    from eventward._internal.policy.base import READ_AUDIT

    with deployment(principal) as dep:
        authorize(dep, principal, READ_AUDIT, AUDIT_RESOURCE)
        st = dep.keys.status()
    if as_json:
        common.emit_json({
            "classes": [
                {"class": c.cls, "kek": c.kek_id, "live_keks": list(c.live_keks),
                 "destroyed_keks": list(c.destroyed_keks), "deks": c.deks, "subjects": c.subjects,
                 "erased_keys": c.erased_keys}
                for c in st.classes
            ],
            "legal_holds": st.holds,
            "erasures": st.erasures,
            "revocation_epoch": st.revocation_epoch,
        })
        return
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
    app.command(
        "init",
        epilog=common.examples(
            "eventward --home ./prod init --admin admin",
            "EVENTWARD_PASSPHRASE=... eventward init --passphrase-env EVENTWARD_PASSPHRASE",
        ),
    )(init)
    app.command(
        "forget",
        epilog=common.examples(
            "eventward forget c1 --reason gdpr-art17 --as admin",
            "printf 'c1\\n' | eventward forget - --reason gdpr-art17 --json",
        ),
    )(forget)
    app.command("hold")(hold)
    app.command("release")(release)
    app.add_typer(keys_app, name="keys")

