"""``eventward witness``: an outside party that cosigns audit checkpoints, and the log's side of it.

The witness commands (``init``, ``cosign``, ``status``, ``serve``) never open a home: they use the witness's
own state directory (``--state`` or ``EVENTWARD_WITNESS_STATE``) and the log's public verifier
key, as a witness on another machine would. ``request`` is the log's side: run against the home
(needs read_audit), it signs a checkpoint and adds the consistency proof from the size the
witness last cosigned, which ``witness status --json`` reports; ``submit`` does the same against a
witness served over HTTP and checks the cosignature it gets back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin, deployment
from eventward.errors import AuditIntegrityError, ConfigError, InputError, NotFoundError

witness_app = typer.Typer(
    help="Witness the audit log: cosign checkpoints only when they extend the last one cosigned.",
    no_args_is_help=True,
)

_STATE = typer.Option(..., "--state", envvar="EVENTWARD_WITNESS_STATE", help="The witness's state directory.")
_JSON = common.json_option()
_OUT = typer.Option(None, "--out", help="Also write the document to this file.")


def register(app: typer.Typer) -> None:
    """Add the ``witness`` sub-app to the root app."""
    app.add_typer(witness_app, name="witness")


def _text(value: str, what: str) -> str:
    """``value`` itself, or the contents of the file it names (``-``: stdin)."""
    if value == "-":
        return sys.stdin.read()
    path = Path(value)
    if path.is_file():
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError):
            raise NotFoundError(f"cannot read {what} file {path}", path=str(path)) from None
    return value


def _emit(text: str, out: Path | None) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
    if out is not None:
        out.write_text(text)


@witness_app.command(epilog=common.examples(
    "eventward witness init --state ./w1 --name witness.example/w1 --log-key audit.pub"))
def init(
    state: Path = _STATE,
    name: str = typer.Option(..., "--name", help="The witness's key name, e.g. witness.example/w1."),
    log_key: str = typer.Option(..., "--log-key", help="The audit log's verifier key (or a file holding it)."),
    as_json: bool = _JSON,
) -> None:
    """Create the witness key and state; print the cosigner key verifiers pass to --witness."""
    from eventward._internal.audit.witness import Witness

    w = Witness.init(state, name, _text(log_key, "log key"))
    if as_json:
        common.emit_json({"name": w.name, "vkey": w.vkey(), "log": w.log_key.name, "state": str(state)})
        return
    _emit(w.vkey() + "\n", None)
    common.err_console.print(f"witness {w.name} for log {w.log_key.name}; state in {state}", highlight=False,
                             markup=False)


@witness_app.command(epilog=common.examples(
    "eventward audit checkpoint > cp.txt", "eventward witness request --from-size 12 > req.json",
    "eventward witness cosign req.json --state ./w1 --out cosigned.txt"))
def cosign(
    request: str = typer.Argument(..., help="A request from 'witness request' (file, or - for stdin)."),
    state: Path = _STATE,
    out: Path = _OUT,
    as_json: bool = _JSON,
) -> None:
    """Verify the checkpoint and its consistency proof from the last cosigned one, then cosign it.

    A rollback, a fork or a missing or wrong proof is refused (exit 8) and nothing is kept."""
    from eventward._internal.audit.witness import Witness, parse_request

    w = Witness.open(state)
    checkpoint, proof = parse_request(_text(request, "request"))
    result = w.cosign(checkpoint, proof)
    if as_json:
        common.emit_json({"old_size": result.old_size, "new_size": result.new_size, "text": result.text})
        if out is not None:
            out.write_text(result.text)
        return
    _emit(result.text, out)


@witness_app.command()
def status(state: Path = _STATE, as_json: bool = _JSON) -> None:
    """The witness's key and the last checkpoint it cosigned (re-verified)."""
    from eventward._internal.audit.witness import Witness

    w = Witness.open(state)
    last = w.last()
    doc = {
        "name": w.name,
        "vkey": w.vkey(),
        "log": w.log_key.name,
        "size": None if last is None else last.size,
        "checkpoint": None if last is None else last.text,
    }
    if as_json:
        common.emit_json(doc)
        return
    common.console.print(
        f"witness {w.name} of {w.log_key.name}: "
        + ("nothing cosigned yet" if last is None else f"last cosigned size {last.size} ({last.time})"),
        highlight=False, markup=False,
    )


@witness_app.command(epilog=common.examples("eventward witness request --from-size 12 --out req.json"))
def request(
    from_size: int = typer.Option(None, "--from-size", min=0, help="The size the witness last cosigned."),
    from_checkpoint: Path = typer.Option(None, "--from", help="The checkpoint the witness last cosigned."),
    out: Path = _OUT,
    principal: str = as_admin(),
) -> None:
    """(Log side) Sign a checkpoint and prove it consistent with the witness's last one."""
    from eventward._internal.audit.checkpoint import verify_checkpoint
    from eventward._internal.audit.log import AuditLog
    from eventward._internal.audit.witness import request_document

    with deployment(principal) as dep:
        log = AuditLog.open(dep.home, authorizer=dep.policy, principal=principal)
        try:
            log.size()  # the ReadAudit gate
            old = from_size
            if from_checkpoint is not None:
                old = verify_checkpoint(_text(str(from_checkpoint), "checkpoint"), log.verifier).size
            cp = log.checkpoint()
            # a log that shrank gets no proof: the witness refuses it as a rollback
            proof = None if old is None or old > cp.size else log.consistency(old, cp.size)
        finally:
            log.close()
    _emit(request_document(cp.text, proof), out)


@witness_app.command(epilog=common.examples("eventward witness serve --state ./w1 --listen 127.0.0.1:8470"))
def serve(
    state: Path = _STATE,
    listen: str = typer.Option("127.0.0.1:8470", "--listen", help="HOST:PORT (port 0 picks a free one)."),
    port_file: Path = typer.Option(None, "--port-file", help="Write the bound port here once listening."),
) -> None:
    """Serve the witness over HTTP: GET /vkey, GET /checkpoint, POST /cosign (a 'witness request')."""
    from eventward._internal.audit.witness import Witness
    from eventward._internal.audit.witness import serve as serve_http

    w = Witness.open(state)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--listen must be HOST:PORT")

    def ready(bound: int) -> None:
        if port_file is not None:
            port_file.write_text(str(bound))
        common.err_console.print(f"witness {w.name} on http://{host}:{bound}/", highlight=False, markup=False)

    try:
        serve_http(w, host, int(port), ready=ready)
    except OSError as e:
        raise ConfigError(f"cannot listen on {listen}: {e.strerror}") from None
    except KeyboardInterrupt:
        return


@witness_app.command(epilog=common.examples("eventward witness submit --url http://127.0.0.1:8470 --out cp.txt"))
def submit(
    url: str = typer.Option(..., "--url", help="The witness's base URL."),
    witness_key: str = typer.Option(
        None, "--witness-key", help="The witness's cosigner key (or a file); default: what it says at /vkey."),
    out: Path = _OUT,
    principal: str = as_admin(),
) -> None:
    """(Log side) Sign a checkpoint, prove it from the witness's last one, get it cosigned and check it."""
    from eventward._internal.audit.checkpoint import verify_checkpoint
    from eventward._internal.audit.log import AuditLog
    from eventward._internal.audit.note import parse_vkey
    from eventward._internal.audit.witness import fetch, request_document
    from eventward._internal.audit.witness import submit as submit_http

    key = parse_vkey((_text(witness_key, "witness key") if witness_key else (fetch(url, "/vkey") or "")).strip())
    with deployment(principal) as dep:
        log = AuditLog.open(dep.home, authorizer=dep.policy, principal=principal)
        try:
            log.size()  # the ReadAudit gate
            last_text = fetch(url, "/checkpoint")
            old = None if last_text is None else verify_checkpoint(last_text, log.verifier).size
            cp = log.checkpoint()
            proof = None if old is None or old > cp.size else log.consistency(old, cp.size)
            cosigned = submit_http(url, request_document(cp.text, proof))
            checked = verify_checkpoint(cosigned, log.verifier, witnesses=[key])
        finally:
            log.close()
    if not checked.cosignatures or checked.size != cp.size:
        raise AuditIntegrityError("the witness's answer does not carry its cosignature on this checkpoint")
    _emit(cosigned, out)
