"""``eventward audit``: read the audit log, prove records, sign checkpoints, verify everything.

Reading the home's log needs ``read_audit`` under the home's Cedar policy for ``--as``
(default ``admin``); a denial is itself recorded. ``--as`` is asserted, not authenticated:
the CLI runs with the home's key material, so it is an operator tool; authenticated access
for services is the gateway (mTLS/JWT). Checking files needs no grant and no home:
``verify --db FILE --key KEY`` and ``verify-certificate FILE --offline --key KEY`` work from
the files alone, and ``public-key`` prints what is meant to be published anyway.
Documents meant to be saved (checkpoints, proofs, certificates) go to stdout or ``--out``;
status lines go to stderr.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin, deployment
from eventward.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from eventward._internal.audit.log import AuditLog
    from eventward._internal.audit.signing import AuditVerifier
    from eventward._internal.audit.verify import VerifyReport
    from eventward._internal.deployment import Deployment
    from eventward._internal.home import Home

audit_app = typer.Typer(
    help="Tamper-evident audit log: records, proofs, signed checkpoints, erasure certificates.",
    no_args_is_help=True,
)

_KEY = typer.Option(None, "--key", help="Audit verifier key (or a file holding it); default: the home's key.")
_OUT = typer.Option(None, "--out", help="Also write the document to this file.")
_AS = as_admin()
_JSON = common.json_option()
_ALWAYS_JSON = typer.Option(False, "--json", help="Accepted for uniformity: the output is always JSON.")


def register(app: typer.Typer) -> None:
    """Add the ``audit`` sub-app to the root app."""
    app.add_typer(audit_app, name="audit")


@contextmanager
def _reading(principal: str) -> Iterator[tuple[Deployment, AuditLog]]:
    """The deployment and a handle on its audit log whose every read checks ReadAudit for ``principal``."""
    from eventward._internal.audit.log import AuditLog

    with deployment(principal) as dep:
        log = AuditLog.open(dep.home, authorizer=dep.policy, principal=principal)
        try:
            log.size()  # passes the ReadAudit gate up front: signing a checkpoint alone is not a gated read
            yield dep, log
        finally:
            log.close()


def _read_file(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        raise NotFoundError(f"cannot read {what} file {path}", path=str(path)) from None


def _verifier(key: str | None, home: Home | None) -> AuditVerifier | None:
    from eventward._internal.audit.signing import AuditVerifier, load_signer

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
        common.err_console.print(f"written to {out}", highlight=False, markup=False)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


@audit_app.command(epilog=common.examples("eventward audit tail -n 50", "eventward audit tail --json"))
def tail(
    n: int = typer.Option(20, "-n", help="How many records, newest last."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Show the newest records."""
    with _reading(principal) as (_, log):
        records = log.tail(n)
    if as_json:
        common.emit_json({"records": [
            {"index": r.index, "time": r.time, "principal": r.principal, "action": r.action,
             "resource": r.resource, "outcome": r.outcome, "reason": r.reason, "meta": dict(r.meta)}
            for r in records
        ]})
        return
    table = Table()
    for name in ("#", "time", "principal", "action", "resource", "outcome", "reason", "meta"):
        table.add_column(name, overflow="fold")  # an audit view never hides part of a record
    for r in records:
        meta = " ".join(f"{k}={v}" for k, v in r.meta.items())
        cells = (str(r.index), r.time, r.principal, r.action, r.resource, r.outcome, r.reason, meta)
        table.add_row(*(Text(c) for c in cells))  # Text: record fields are never parsed as markup
    common.console.print(table)


@audit_app.command()
def show(
    index: int = typer.Argument(..., help="Record index."),
    principal: str = _AS,
    as_json: bool = _ALWAYS_JSON,
) -> None:
    """Show one record as JSON: the record and its leaf hash."""
    with _reading(principal) as (_, log):
        record = log.get(index)
        leaf = log.prove(index).leaf_hash
    doc = {"record": orjson.loads(record.body), "leaf_hash": _b64(leaf)}
    _emit(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n", None)


@audit_app.command()
def prove(
    index: int = typer.Argument(..., help="Record index."),
    size: int = typer.Option(None, "--size", help="Tree size to prove against (default: now)."),
    out: Path = _OUT,
    principal: str = _AS,
    as_json: bool = _ALWAYS_JSON,
) -> None:
    """Inclusion proof of a record, with the record bytes and the root it proves against."""
    with _reading(principal) as (_, log):
        proof = log.prove(index, size)
        doc = {
            "proof": proof.to_dict(),
            "root": _b64(log.root(proof.tree_size)),
            "record": log.get(index).body.decode(),
        }
    _emit(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n", out)


@audit_app.command()
def checkpoint(out: Path = _OUT, principal: str = _AS, as_json: bool = _JSON) -> None:
    """Sign and print a checkpoint of the current tree (C2SP signed-note format); it is also kept."""
    with _reading(principal) as (_, log):
        cp = log.checkpoint()
    if as_json:
        common.emit_json({"origin": cp.origin, "size": cp.size, "root": _b64(cp.root), "time": cp.time,
                          "text": cp.text})
        if out is not None:
            out.write_text(cp.text)
        return
    _emit(cp.text, out)


@audit_app.command(
    "timestamp",
    epilog=common.examples("eventward audit timestamp --tsa http://tsa.example/ --tsa-cert tsa.pem --out cp.tsr"),
)
def timestamp_cmd(
    tsa: str = typer.Option(..., "--tsa", help="The timestamp authority's URL (RFC 3161 over HTTP)."),
    tsa_cert: Path = typer.Option(..., "--tsa-cert", help="The TSA's certificate (PEM), pinned."),
    ca_cert: Path = typer.Option(None, "--ca-cert", help="The CA that issued the TSA certificate (PEM)."),
    out: Path = typer.Option(None, "--out", help="Write the token (DER) to this file."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Sign a checkpoint and have a TSA timestamp it (RFC 3161); the verified token is kept with it."""
    from eventward._internal.audit.timestamp import request_timestamp, verify_timestamp

    cert = _read_bytes(tsa_cert, "TSA certificate")
    ca = _read_bytes(ca_cert, "CA certificate") if ca_cert is not None else None
    with _reading(principal) as (_, log):
        cp = log.checkpoint()
        token = request_timestamp(tsa, cp.text.encode())
        ts = verify_timestamp(token, cp.text.encode(), cert, ca_cert=ca)
        log.attach("timestamp", str(cp.size), cp.size, orjson.dumps(
            {"checkpoint": cp.text, "token": _b64(token), "gen_time": ts.gen_time.isoformat()}).decode())
    if out is not None:
        out.write_bytes(token)
    doc = {"size": cp.size, "gen_time": ts.gen_time.isoformat(), "serial": ts.serial, "tsa": ts.tsa,
           "checkpoint": cp.text, "token": _b64(token)}
    if as_json:
        common.emit_json(doc)
        return
    common.console.print(f"checkpoint of size {cp.size} timestamped at {doc['gen_time']} by {ts.tsa}",
                         highlight=False, markup=False)


@audit_app.command("verify-timestamp")
def verify_timestamp_cmd(
    checkpoint: Path = typer.Argument(..., help="The checkpoint text file."),
    token: Path = typer.Argument(..., help="The timestamp token (DER)."),
    tsa_cert: Path = typer.Option(..., "--tsa-cert", help="The TSA's certificate (PEM), pinned."),
    ca_cert: Path = typer.Option(None, "--ca-cert", help="The CA that issued the TSA certificate (PEM)."),
    as_json: bool = _JSON,
) -> None:
    """Check offline that a TSA timestamped exactly this checkpoint text (no home, no grant)."""
    from eventward._internal.audit.timestamp import verify_timestamp

    ca = _read_bytes(ca_cert, "CA certificate") if ca_cert is not None else None
    ts = verify_timestamp(_read_bytes(token, "token"), _read_bytes(checkpoint, "checkpoint"),
                          _read_bytes(tsa_cert, "TSA certificate"), ca_cert=ca)
    if as_json:
        common.emit_json({"ok": True, "gen_time": ts.gen_time.isoformat(), "serial": ts.serial, "tsa": ts.tsa})
        return
    common.console.print(f"[green]OK[/]: timestamped at {ts.gen_time.isoformat()} by {ts.tsa}", highlight=False)


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise NotFoundError(f"cannot read {what} file {path}", path=str(path)) from None


@audit_app.command(
    "reconcile",
    epilog=common.examples(
        "eventward audit reconcile --topic orders --as auditor", "eventward audit reconcile --grace 0"
    ),
)
def reconcile_cmd(
    topics: list[str] = typer.Option(None, "--topic", help="Only these topics (default: every topic of the log)."),
    grace: float = typer.Option(
        60.0, "--grace", min=0.0, help="Leave batches sealed less than this many seconds ago (0: no producer runs)."
    ),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Add the Publish records of stored batches whose producer died before writing them.

    An embedded home does this on every open; on NATS or Kafka run it as a principal whose broker
    credentials may read the topics. Records come from the seals only and say ``reconciled``.
    """
    with _reading(principal) as (dep, _):
        r = dep.reconcile_audit(grace_s=grace, streams=topics or None)
    doc = {"batches_checked": r.batches_checked, "records_added": r.records_added, "held_back": r.held_back}
    if as_json:
        common.emit_json(doc)
        return
    common.err_console.print(
        f"{r.records_added} record(s) added for {r.batches_checked} batch(es) checked"
        + (f"; {r.held_back} topic(s) wait for batches younger than {grace:g} s" if r.held_back else "")
    )


@audit_app.command("public-key")
def public_key() -> None:
    """Print the audit verifier key, for anyone who checks checkpoints and certificates (no grant needed)."""
    from eventward._internal.audit.log import AuditLog

    with AuditLog.open(common.home().require()) as log:
        _emit(log.verifier.vkey() + "\n", None)


@audit_app.command(
    epilog=common.examples(
        "eventward audit verify",
        "eventward audit verify --db audit.db --key audit.pub --checkpoint cp.txt --json",
    )
)
def verify(
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A checkpoint published earlier."),
    db: Path = typer.Option(None, "--db", help="Verify this database file instead of the home's (no grant)."),
    key: str = _KEY,
    state: Path = typer.Option(
        None, "--state", help="Where this verifier keeps the last checkpoint it verified (default: under "
        "~/.config/eventward/audit-state, per log); a log that no longer extends it fails."),
    no_state: bool = typer.Option(False, "--no-state", help="Neither read nor update the verifier's state."),
    witness: list[str] = typer.Option(None, "--witness", help="A witness's cosigner key (vkey, or a file)."),
    witnessed: list[Path] = typer.Option(
        None, "--witnessed", help="A checkpoint the witnesses cosigned (e.g. the witness's state file)."),
    witness_url: list[str] = typer.Option(
        None, "--witness-url", help="A served witness: its last cosigned checkpoint (and key) are fetched."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Recompute the whole tree and check every signed checkpoint; exit 1 naming the first bad index.

    On the home's log, the last verified checkpoint is remembered outside the home (--state), so a
    truncation that also deleted every stored checkpoint is still a rollback."""
    cp_text = _read_file(checkpoint, "checkpoint") if checkpoint is not None else None
    extra: dict[str, object] = {}
    if db is not None:  # offline: the file and the public key are all it takes
        verifier = _verifier(key, None)
        report = _verify(db, cp_text, verifier)
    else:
        with _reading(principal) as (dep, log):
            verifier = _verifier(key, dep.home)
            if verifier is None or (no_state and not witness and not witness_url):
                report = _verify(log, cp_text, verifier)
            else:
                report, extra = _verify_state(
                    log, verifier, cp_text, state, not no_state, witness, witnessed, witness_url or [])
    if as_json:
        err = report.error
        common.emit_json({
            "ok": err is None,
            "size": report.size,
            "root": _b64(report.root),
            "records_checked": report.records_checked,
            "nodes_checked": report.nodes_checked,
            "checkpoints_checked": report.checkpoints_checked,
            "checkpoint_key": verifier is not None,
            "error": None if err is None else {"message": err.message, "index": err.index},
            **extra,
        })
        if err is not None:
            raise SystemExit(common.EXIT_PROBLEM)
        return
    if report.error is not None:
        where = "" if report.error.index is None else f" (first bad index: {report.error.index})"
        common.err_console.print(
            f"[bold red]FAILED[/]: {report.error.message}{where}", highlight=False, soft_wrap=True
        )
        raise SystemExit(1)  # not typer.Exit: common.run (standalone_mode=False) would drop its code
    common.console.print(
        f"[green]OK[/]: {report.size} records, {report.nodes_checked} tree nodes, "
        f"{report.checkpoints_checked} signed checkpoints; root {_b64(report.root)}"
        + ("" if verifier else " [yellow](no verifier key: checkpoints not checked)[/]"),
        highlight=False,
        soft_wrap=True,
    )
    if extra:
        common.err_console.print(
            f"state: {extra['state']} (remembered size {extra['remembered_size']}, now {extra['saved_size']}); "
            f"witnessed checkpoints {extra['witnessed']}, unwitnessed records {extra['unwitnessed_records']}",
            highlight=False, markup=False, soft_wrap=True,
        )


def _verify_state(
    log: AuditLog, verifier: AuditVerifier, cp_text: str | None, state: Path | None, use_state: bool,
    witness: list[str] | None, witnessed: list[Path] | None, urls: list[str],
) -> tuple[VerifyReport, dict[str, object]]:
    """verify_with_state, with the state path defaulted per log and the witness keys read (and
    fetched from served witnesses, whose last cosigned checkpoint is fetched too)."""
    from eventward._internal.audit.note import parse_vkey
    from eventward._internal.audit.state import default_state_path, verify_with_state
    from eventward._internal.audit.witness import fetch as fetch_witness

    keys = [parse_vkey(_read_file(Path(w), "witness key").strip() if Path(w).is_file() else w) for w in witness or []]
    texts = [_read_file(p, "witnessed checkpoint") for p in witnessed or []]
    for url in urls:
        if not witness:
            keys.append(parse_vkey((fetch_witness(url, "/vkey") or "").strip()))
        if (text := fetch_witness(url, "/checkpoint")) is not None:
            texts.append(text)
    path = (state or default_state_path(verifier.name)) if use_state else None
    with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=common.err_console, transient=True) as bar:
        task = bar.add_task("verify", total=None)
        r = verify_with_state(
            log, verifier, state=path, checkpoint=cp_text, witnesses=keys, witnessed=texts,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    return r.report, {
        "state": None if path is None else str(path),
        "remembered_size": None if r.remembered is None else r.remembered.size,
        "saved_size": None if r.saved is None else r.saved.size,
        "witnessed": [c.size for c in r.witnessed],
        "unwitnessed_records": r.unwitnessed_records,
    }


def _verify(source: AuditLog | Path, checkpoint: str | None, verifier: AuditVerifier | None) -> VerifyReport:
    from eventward._internal.audit.verify import verify_log

    if checkpoint is not None and verifier is None:
        raise ConfigError("--checkpoint needs the audit verifier key (--key)")
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=common.err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)
        return verify_log(
            source,
            checkpoint=checkpoint,
            public_key=verifier,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


@audit_app.command()
def certificate(
    subject: str = typer.Argument(..., help="Data-subject id (- reads stdin), or its hash with --hash."),
    is_hash: bool = typer.Option(False, "--hash", help="SUBJECT is already the subject hash."),
    out: Path = _OUT,
    principal: str = _AS,
    as_json: bool = _ALWAYS_JSON,
) -> None:
    """Print the newest erasure certificate of a subject (looked up by its keyed hash)."""
    from eventward._internal.audit.certificate import find_certificate, verify_certificate

    raw = sys.stdin.readline().rstrip("\r\n") if subject == "-" and not is_hash else subject
    with _reading(principal) as (dep, log):
        # a raw id is hashed with the deployment's key at once and never printed or stored
        subject_hash = raw if is_hash else dep.keys.known_subject(raw)
        if subject_hash is None:  # forgotten (its pseudonym went with its keys) or never seen
            raise NotFoundError("no pseudonym for this subject (forgotten or never seen): pass the subject "
                                "hash that forget printed, with --hash")
        cert = find_certificate(log, subject_hash)
        verify_certificate(cert, log.verifier, log=log)
    _emit(cert.to_json(), out)
    common.err_console.print(f"[green]verified[/]: record {cert.index}, signature, proof and checkpoint")


@audit_app.command("verify-certificate")
def verify_certificate_cmd(
    file: Path = typer.Argument(..., help="Certificate file (JSON)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A later checkpoint to check against."),
    key: str = _KEY,
    offline: bool = typer.Option(False, "--offline", help="Do not consult the home's audit log (no grant)."),
    principal: str = _AS,
    as_json: bool = _JSON,
) -> None:
    """Check a certificate's signature, inclusion proof and checkpoint (and consistency with the log)."""
    from eventward._internal.audit.certificate import verify_certificate

    text = _read_file(file, "certificate")
    later = _read_file(checkpoint, "checkpoint") if checkpoint is not None else None
    home = None if offline else common.home()
    if home is None or not home.audit_db.exists():
        verifier = _verifier(key, None)
        if verifier is None:
            raise ConfigError("no audit verifier key: pass --key")
        check = verify_certificate(text, verifier, checkpoint=later)
    else:
        with _reading(principal) as (dep, log):
            verifier = _verifier(key, dep.home) or log.verifier
            check = verify_certificate(text, verifier, log=log, checkpoint=later)
    if as_json:  # a failed check is a typed error (exit 8), never a JSON document
        common.emit_json({
            "ok": True,
            "subject_hash": check.subject_hash,
            "index": check.index,
            "checkpoint_size": check.checkpoint_size,
            "later_checkpoint_size": check.later_checkpoint_size,
            "log_size": check.log_size,
        })
        return
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
