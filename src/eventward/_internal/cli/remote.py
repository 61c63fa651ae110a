"""Client mode of the CLI: operator commands against the control plane, as the operator's own identity.

``eventward --connect URL[,URL...]`` or ``--profile NAME`` (env ``EVENTWARD_CONNECT`` /
``EVENTWARD_PROFILE``, or the profile in use, see ``eventward profile``) runs a command over the
gateway's HTTP API (``eventward serve``) instead of opening a home. The principal is whoever the
client certificate or JWT authenticates: the control plane decides and audits under that name, so
``--as`` (asserted, home mode only) does not exist here and is refused, as is ``--home``. A command
or option the API does not offer is refused by name (:class:`NotInClientMode`), never run against a
home as a fallback: :func:`eventward._internal.cli.common.home` refuses to open one in client mode.

The HTTP client is :class:`eventward._internal.control.http.HttpControlAPI` (one session per thread,
``trust_env=False``, only the profile's CA, fail-over across the URLs); :class:`OperatorClient`
adds the gateway's operator operations on top of it.

Which mode: ``--connect``/``--profile`` on the command line win over ``EVENTWARD_HOME``; ``--home``
on the command line wins over ``EVENTWARD_CONNECT``/``EVENTWARD_PROFILE``; both on the command line
(or both only in the environment) is refused as ambiguous; with none of them, the profile in use
(``eventward profile use``) selects client mode, else the home is opened as always.
"""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from eventward._internal.cli import common, profiles
from eventward.errors import AuditIntegrityError, ConfigError, InputError, NotInClientMode, SealError

if TYPE_CHECKING:
    from eventward._internal.audit.tree import ConsistencyProof
    from eventward._internal.client.trust import TrustedKey
    from eventward._internal.control.client import Grants
    from eventward._internal.control.http import HttpControlAPI

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CONNECT_ENV = "EVENTWARD_CONNECT"
PROFILE_ENV = "EVENTWARD_PROFILE"
# credentials for --connect without a profile (paths, like a profile's fields)
CA_ENV, CERT_ENV, KEY_ENV, TOKEN_FILE_ENV = "EVENTWARD_CA", "EVENTWARD_CERT", "EVENTWARD_KEY", "EVENTWARD_TOKEN_FILE"
ANCHOR_ENV, AUDIT_KEY_ENV = "EVENTWARD_ANCHOR", "EVENTWARD_AUDIT_KEY"  # pinned public keys (text or file)
PRINCIPAL_ENV = "EVENTWARD_PRINCIPAL"  # home mode's --as (cli/context.py)

AS_REFUSED = "--as does not exist in client mode: the principal is your certificate's identity"
LOCAL_COMMANDS = frozenset({"profile"})  # run the same in both modes: they touch no home and no server
MAX_SCHEMA_BYTES = 1 << 20


# --- the HTTP client ----------------------------------------------------------------------------


class OperatorClient:
    """The gateway's operator operations as the authenticated operator. Every method raises the
    typed errors of HttpControlAPI: ControlPlaneUnavailable when no URL answered (nothing changed),
    AuthenticationError (401), AccessDenied (403), NotFoundError (404), ConflictError (409),
    InputError (400/413/422), QuotaExceeded (429)."""

    def __init__(self, api: HttpControlAPI) -> None:
        self.api = api

    def whoami(self) -> dict[str, Any]:
        return dict(self.api.call("GET", "/v1/whoami"))

    def forget(self, subject: str, reason: str = "", now: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"subject": subject, "now": now}
        if reason:
            body["reason"] = reason
        return dict(self.api.call("POST", "/v1/subjects/forget", body=body))

    def hold(self, subject: str, reason: str) -> None:
        self.api.call("POST", "/v1/subjects/hold", body={"subject": subject, "reason": reason})

    def release(self, subject: str) -> None:
        self.api.call("POST", "/v1/subjects/release", body={"subject": subject})

    def schemas(self) -> list[dict[str, Any]]:
        return list(self.api.call("GET", "/v1/schemas")["schemas"])

    def schema(self, event_type: str, version: int | None) -> dict[str, Any]:
        params = {"version": version} if version is not None else None
        return dict(self.api.call("GET", f"/v1/schemas/{_segment(event_type)}", params=params))

    def propose(self, event_type: str, document: Any, fmt: str) -> dict[str, Any]:
        return dict(self.api.call("POST", f"/v1/schemas/{_segment(event_type)}/proposals",
                                  body={"schema": document, "format": fmt}))

    def approve(self, event_type: str, version: int, security: bool) -> dict[str, Any]:
        return dict(self.api.call("POST", f"/v1/schemas/{_segment(event_type)}/proposals/v{version}/approve",
                                  body={"security": security}))

    def check(self, event_type: str, document: Any, fmt: str) -> dict[str, Any]:
        return dict(self.api.call("POST", f"/v1/schemas/{_segment(event_type)}/check",
                                  body={"schema": document, "format": fmt}))

    def checkpoint(self) -> dict[str, Any]:
        return dict(self.api.call("GET", "/v1/audit/checkpoint"))

    def prove(self, index: int, tree_size: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"index": index}
        if tree_size is not None:
            params["tree_size"] = tree_size
        return dict(self.api.call("GET", "/v1/audit/proof", params=params))

    def certificate(self, certificate: str) -> dict[str, Any]:
        return dict(self.api.call("GET", f"/v1/audit/certificates/{_segment(certificate)}"))

    def explain(self, principal: str | None, action: str, resource: tuple[str, str],
                event_type: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action, "resource": {"kind": resource[0], "id": resource[1]}}
        if principal is not None:
            body["principal"] = principal
        if event_type is not None:
            body["event_type"] = event_type
        return dict(self.api.call("POST", "/v1/policy/explain", body=body))

    def audit_records(self, n: int) -> list[dict[str, Any]]:
        return list(self.api.call("GET", "/v1/audit/records", params={"n": n})["records"])

    def alerts(self, n: int) -> list[dict[str, Any]]:
        return list(self.api.call("GET", "/v1/alerts", params={"n": n})["alerts"])

    def lag(self) -> list[dict[str, Any]]:
        return list(self.api.call("GET", "/v1/lag")["groups"])

    def keys_status(self) -> dict[str, Any]:
        return dict(self.api.call("GET", "/v1/keys/status"))

    def dead_letters(self, topic: str, include_resolved: bool) -> dict[str, Any]:
        return dict(self.api.call("GET", f"/v1/topics/{_segment(topic)}/dlq",
                                  params={"resolved": int(include_resolved)}))

    def approve_service(self, request: bytes, may_seal: dict[str, list[str]], days: int,
                        control_urls: list[str], nats_servers: list[str]) -> bytes:
        """The grant (JSON bytes, as `service install` reads it)."""
        try:
            text = request.decode()
        except UnicodeDecodeError:
            raise InputError("the enrollment request is not UTF-8 JSON") from None
        grant = self.api.call("POST", "/v1/services/approve", body={
            "request": text, "may_seal": may_seal, "days": days, "control_urls": control_urls,
            "nats_servers": nats_servers})
        return orjson.dumps(grant)

    def trust_entries(self, anchor: Ed25519PublicKey) -> tuple[list[tuple[TrustedKey, Grants | None]], list[int]]:
        """The trust registry, each entry verified against ``anchor`` (pinned in the profile) as a
        client-mode consumer verifies them for seals: TLS alone, or a compromised replica or proxy,
        cannot vouch for a key. Returns the verified entries and the positions of refused ones."""
        from eventward._internal.control.client import verify_trust_entry

        entries = self.api.call("GET", "/v1/control/trust").get("entries")
        if not isinstance(entries, list):
            raise SealError("the control plane's trust registry is not a list of signed entries",
                            reason="bad_statement")
        good: list[tuple[TrustedKey, Grants | None]] = []
        refused: list[int] = []
        for i, wire in enumerate(entries):
            try:
                good.append(verify_trust_entry(anchor, wire))
            except SealError:
                refused.append(i)
        return good, refused

    def audit_consistency(self, from_size: int) -> tuple[str, ConsistencyProof | None]:
        """The latest signed checkpoint and a consistency proof from ``from_size`` (unverified:
        audit.verify.check_extends and verify_checkpoint judge them); AuditIntegrityError when the
        answer is not a checkpoint and a proof."""
        from eventward._internal.audit.tree import ConsistencyProof

        doc = self.api.call("GET", "/v1/control/audit/consistency", params={"from_size": from_size})
        if not isinstance(doc, dict) or not isinstance(doc.get("checkpoint"), str) or "proof" not in doc:
            raise AuditIntegrityError("the control plane's answer is not a checkpoint and a consistency proof")
        proof = doc["proof"]
        if proof is not None and not isinstance(proof, dict):
            raise AuditIntegrityError("the control plane's consistency proof is not an object")
        return doc["checkpoint"], None if proof is None else ConsistencyProof.from_dict(proof)


def _segment(text: str) -> str:
    """A path segment from user input: percent-encoded, so it can never add a segment or a query."""
    from urllib.parse import quote

    return quote(text, safe="")


# --- which mode, with which credentials -------------------------------------------------------


@dataclass
class Remote:
    """Client mode's settings: the control plane and the operator's credentials (paths)."""

    profile: profiles.Profile  # a stored one, or "connect" built from EVENTWARD_CA/CERT/KEY
    _client: OperatorClient | None = field(default=None, repr=False)

    def client(self) -> OperatorClient:
        """The connection, made at the first command that needs it; the key or token file must be
        private to its owner (0600, no symlink) or nothing is sent."""
        from eventward._internal.control.http import HttpControlAPI
        from eventward._internal.home import read_secret

        if self._client is None:
            p = self.profile
            for f in [Path(p.ca), *(Path(x) for x in (p.cert,) if x)]:
                if not f.is_file():
                    raise ConfigError(f"{f} does not exist or is not a file (profile {p.name})")
            token = None
            if p.token_file is not None:
                token = read_secret(Path(p.token_file)).decode().strip()
                if not token or any(c.isspace() for c in token):
                    raise ConfigError(f"{p.token_file} does not hold one JWT")
            if p.key is not None:
                read_secret(Path(p.key))  # its mode, before requests reads it
            api = HttpControlAPI(list(p.urls), principal="", cert=p.cert, key=p.key, ca=p.ca, token=token)
            self._client = OperatorClient(api)
        return self._client


def _from_command_line(ctx: Any, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "PROMPT")


def resolve(ctx: Any) -> Remote | None:
    """Client mode's settings from the root options (see the module docstring), or None: home mode."""
    connect, name, home = ctx.params.get("connect"), ctx.params.get("profile"), ctx.params.get("home")
    asked_here = _from_command_line(ctx, "connect") or _from_command_line(ctx, "profile")
    if asked_here:
        if home is not None and _from_command_line(ctx, "home"):
            raise NotInClientMode("--home names a local home and --connect/--profile a control plane: give one")
    elif connect is not None or name is not None:
        if home is not None:
            if _from_command_line(ctx, "home"):
                return None  # the command line wins over EVENTWARD_CONNECT/EVENTWARD_PROFILE
            raise NotInClientMode(f"EVENTWARD_HOME and {CONNECT_ENV}/{PROFILE_ENV} are both set: unset one")
    else:
        if home is not None:
            return None
        stored = profiles.load()
        if stored.current is None:
            return None
        name = stored.current
    return settings(connect, name)


def settings(connect: str | None, name: str | None) -> Remote:
    """The profile named (or in use), its URLs replaced by ``connect`` if given; ``connect`` alone
    with no profile takes its credentials from EVENTWARD_CA/EVENTWARD_CERT/EVENTWARD_KEY
    (or EVENTWARD_TOKEN_FILE)."""
    stored = profiles.load()
    if name is not None or connect is None or stored.current is not None:
        p = stored.get(profiles.check_name(name) if name is not None else None)
        if connect is not None:
            p = replace(p, urls=profiles.parse_urls(connect))
        return Remote(p)
    env = {k: os.environ.get(k) or None for k in (CA_ENV, CERT_ENV, KEY_ENV, TOKEN_FILE_ENV)}
    if env[CA_ENV] is None or (env[TOKEN_FILE_ENV] is None and (env[CERT_ENV] is None or env[KEY_ENV] is None)):
        raise ConfigError(f"--connect needs your credentials: --profile NAME (eventward profile add), or "
                          f"{CA_ENV} with {CERT_ENV} and {KEY_ENV} (or {TOKEN_FILE_ENV}): file paths")
    p = profiles.Profile("connect", profiles.parse_urls(connect), str(env[CA_ENV]), env[CERT_ENV],
                         env[KEY_ENV], env[TOKEN_FILE_ENV] if env[CERT_ENV] is None else None,
                         profiles.pin_text(os.environ.get(ANCHOR_ENV) or None, "anchor"),
                         profiles.pin_text(os.environ.get(AUDIT_KEY_ENV) or None, "audit key"))
    p.check()
    return Remote(p)


def refuse_home_options(args: list[str]) -> None:
    """``--as`` and ``$EVENTWARD_PRINCIPAL`` name a principal: in client mode the credentials do."""
    for arg in args:
        if arg == "--":
            break
        if arg == "--as" or arg.startswith("--as="):
            raise NotInClientMode(AS_REFUSED)
        if arg == "--home" or arg.startswith("--home="):
            raise NotInClientMode("--home does not exist in client mode: commands run on the control plane")
    if os.environ.get(PRINCIPAL_ENV):
        raise NotInClientMode(f"{AS_REFUSED} (unset {PRINCIPAL_ENV})")


def _home_command(ctx: Any, path: list[str]) -> Any:
    """The home-mode command at ``path`` (names below the root), or None."""
    root = ctx.find_root()
    cmd = root.command
    for name in path:
        getter = getattr(cmd, "home_get_command", None) or getattr(cmd, "get_command", None)
        if getter is None:
            return None
        cmd = getter(root, name)
        if cmd is None:
            return None
    return cmd


def _path_below_root(ctx: Any) -> list[str]:
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return list(reversed(names))


def _not_offered(what: str) -> NotInClientMode:
    return NotInClientMode(f"'{what}' has no control-API equivalent, so it does not run in client mode: "
                           "run it where the home is (eventward --home DIR ...)")


class ClientGroup(TyperGroup):
    """A group of client-mode commands: a name that exists only in home mode is refused by name."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            path = [*_path_below_root(ctx), name]
            if _home_command(ctx, path) is not None:
                raise _not_offered(" ".join(path))
        return super().resolve_command(ctx, args)


class ClientCommand(TyperCommand):
    """A client-mode command: an option only its home-mode twin has is refused by name."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from typer._click.exceptions import NoSuchOption

        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as e:
            if e.option_name == "--as":
                raise NotInClientMode(AS_REFUSED) from None
            twin = _home_command(ctx, _path_below_root(ctx))
            if twin is not None and any(e.option_name in p.opts for p in twin.params):
                raise NotInClientMode(
                    f"{e.option_name} of '{' '.join(_path_below_root(ctx))}' is not offered by the control API, "
                    "so it does not exist in client mode") from None
            raise


class RootGroup(TyperGroup):
    """The ``eventward`` group: resolves the command from the client-mode tree in client mode."""

    def home_get_command(self, ctx: Any, name: str) -> Any:
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        common.STATE.remote = None
        if not args or args[0] in LOCAL_COMMANDS:
            return super().resolve_command(ctx, args)
        remote = resolve(ctx)
        if remote is None:
            return super().resolve_command(ctx, args)
        common.STATE.remote = remote
        refuse_home_options(args)
        return client_group().resolve_command(ctx, args)


_GROUP: Any = None


def client_group() -> Any:
    global _GROUP
    if _GROUP is None:
        _GROUP = typer.main.get_group(client_app)
    return _GROUP


# --- the client-mode commands --------------------------------------------------------------------

client_app = typer.Typer(cls=ClientGroup, name="eventward", no_args_is_help=True, pretty_exceptions_enable=False)
schema_app = typer.Typer(cls=ClientGroup, help="Governed event schemas over the control plane.", no_args_is_help=True)
audit_app = typer.Typer(cls=ClientGroup, help="The audit log's checkpoints, proofs and certificates.",
                        no_args_is_help=True)
policy_app = typer.Typer(cls=ClientGroup, help="Authorization decisions explained.", no_args_is_help=True)
trust_app = typer.Typer(cls=ClientGroup, help="Signing keys the control plane trusts.", no_args_is_help=True)
keys_app = typer.Typer(cls=ClientGroup, help="Key status (rotation runs on the control plane).", no_args_is_help=True)
dlq_app = typer.Typer(cls=ClientGroup, help="Dead letters (metadata only).", no_args_is_help=True)
service_app = typer.Typer(cls=ClientGroup, help="Approve service enrollments.", no_args_is_help=True)
client_app.add_typer(keys_app, name="keys")
client_app.add_typer(dlq_app, name="dlq")
client_app.add_typer(service_app, name="service")
client_app.add_typer(schema_app, name="schema")
client_app.add_typer(audit_app, name="audit")
client_app.add_typer(policy_app, name="policy")
client_app.add_typer(trust_app, name="trust")

_JSON = common.json_option()


def _remote() -> Remote:
    remote = common.STATE.remote
    if not isinstance(remote, Remote):  # only reachable through RootGroup in client mode
        raise NotInClientMode("this command runs in client mode only (--connect or --profile)")
    return remote


def _client() -> OperatorClient:
    return _remote().client()


def _subject(arg: str) -> str:
    if arg != "-":
        return arg
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise InputError("no data-subject id on stdin")
    return value


def _print(text: str) -> None:
    common.console.print(text, highlight=False, markup=False, soft_wrap=True)


@client_app.command("whoami", cls=ClientCommand)
def whoami(as_json: bool = _JSON) -> None:
    """Who the control plane authenticates you as (your certificate's or token's principal)."""
    me = _client().whoami()
    if as_json:
        common.emit_json(me)
        return
    _print(f"{me['principal']} ({me['method']})")


@client_app.command("forget", cls=ClientCommand)
def forget(
    subject: str = typer.Argument(..., metavar="SUBJECT", help="Data-subject id, or - to read it from stdin."),
    reason: str = typer.Option("", "--reason", help="A short reason code such as gdpr-art17 (audited; free text "
                               "is replaced by the generic code erasure-request)."),
    now: bool = typer.Option(False, "--now", help="Close the KEK epoch at once (needs rotate_keys on the classes)."),
    as_json: bool = _JSON,
) -> None:
    """Crypto-shred a data subject on the control plane; prints the signed erasure certificate."""
    from eventward._internal.deployment import is_reason_code

    code = reason if not reason or is_reason_code(reason) else "erasure-request"  # free text is never sent
    cert = _client().forget(_subject(subject), code, now)
    if reason and code != reason:
        common.err_console.print("[yellow]note[/]: --reason was not a code; recorded as erasure-request")
    if as_json:
        common.emit_json(cert)
        return
    t = Table(title="erasure certificate", show_header=False)
    for k in ("certificate", "subject_hash", "keys_destroyed", "issued_at", "complete_after", "audit_index"):
        if k in cert:
            t.add_row(k.replace("_", " "), Text(str(cert[k])))
    common.console.print(t)


@client_app.command("hold", cls=ClientCommand)
def hold(subject: str = typer.Argument(..., help="Data-subject id, or - to read it from stdin."),
         reason: str = typer.Option(..., "--reason", help="A short reason code such as case-2024-117.")) -> None:
    """Place a legal hold: the subject cannot be forgotten until released."""
    _client().hold(_subject(subject), reason)
    _print("legal hold placed")


@client_app.command("release", cls=ClientCommand)
def release(subject: str = typer.Argument(..., help="Data-subject id, or - to read it from stdin.")) -> None:
    """Release a legal hold."""
    _client().release(_subject(subject))
    _print("legal hold released")


@schema_app.command("list", cls=ClientCommand)
def schema_list(as_json: bool = _JSON) -> None:
    """Event types you may read, with their newest version and pending proposals."""
    items = _client().schemas()
    if as_json:
        common.emit_json({"schemas": items})
        return
    t = Table("type", "latest", "pending")
    for s in items:
        t.add_row(Text(str(s["type"])), f"v{s['latest_version']}" if s["latest_version"] else "-",
                  str(s["pending"]))
    common.console.print(t)


@schema_app.command("show", cls=ClientCommand)
def schema_show(type_: str = typer.Argument(..., metavar="TYPE"),
                version: int = typer.Argument(None, help="Default: the active version."),
                as_json: bool = _JSON) -> None:
    """One version and its document."""
    v = _client().schema(type_, version)
    if as_json:
        common.emit_json(v)
        return
    _print(f"{v['type']} v{v['version']} ({v['format']}, {v['status']})")
    common.print_code(orjson.dumps(v["schema"], option=orjson.OPT_INDENT_2).decode(), "json")


def _document(file: Path) -> Any:
    try:
        if file.stat().st_size > MAX_SCHEMA_BYTES:
            raise InputError(f"{file} is larger than a schema may be ({MAX_SCHEMA_BYTES} bytes)")
        raw = file.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InputError(f"{file} is not JSON (the API takes JSON Schema or Avro as JSON)") from None


_FORMAT = typer.Option("json", "--format", "-f", help="Schema format: json (JSON Schema) or avro.")


@schema_app.command("propose", cls=ClientCommand)
def schema_propose(type_: str = typer.Argument(..., metavar="TYPE"), file: Path = typer.Argument(...),
                   fmt: str = _FORMAT, as_json: bool = _JSON) -> None:
    """Propose a new version; another principal must approve it."""
    r = _client().propose(type_, _document(file), fmt)
    if as_json:
        common.emit_json(r)
        return
    _print(f"proposed {r['type']} v{r['version']} ({r['status']})")
    for finding in r.get("security_changes", []):
        _print(f"  security change: {orjson.dumps(finding).decode()}")


@schema_app.command("approve", cls=ClientCommand)
def schema_approve(type_: str = typer.Argument(..., metavar="TYPE"), version: int = typer.Argument(...),
                   security: bool = typer.Option(False, "--security", help="Give the security approval."),
                   as_json: bool = _JSON) -> None:
    """Approve a proposed version (never your own)."""
    v = _client().approve(type_, version, security)
    if as_json:
        common.emit_json(v)
        return
    _print(f"{v['type']} v{v['version']} is {v['status']}")


@schema_app.command("check", cls=ClientCommand)
def schema_check(type_: str = typer.Argument(..., metavar="TYPE"), file: Path = typer.Argument(...),
                 fmt: str = _FORMAT, as_json: bool = _JSON) -> None:
    """Compatibility and security-regression check of a candidate (exit 1 if it would be refused)."""
    r = _client().check(type_, _document(file), fmt)
    if as_json:
        common.emit_json(r)
    else:
        _print("compatible" if r["compatible"] else "incompatible")
        for p in r.get("problems", []):
            _print(f"  problem: {p}")
        for finding in r.get("security_changes", []):
            _print(f"  security change: {orjson.dumps(finding).decode()}")
    if not r["compatible"]:
        raise typer.Exit(common.EXIT_PROBLEM)


@audit_app.command("checkpoint", cls=ClientCommand)
def audit_checkpoint(as_json: bool = _JSON) -> None:
    """The audit log's latest signed tree head."""
    cp = _client().checkpoint()
    if as_json:
        common.emit_json(cp)
        return
    _print(f"tree size {cp['tree_size']}, root {cp['root_hash']}, {cp['timestamp']}, key {cp['key_id']}")


@audit_app.command("verify", cls=ClientCommand)
def audit_verify(
    key: str = typer.Option(None, "--key", help="Audit verifier key (or a file holding it); default: the one "
                            "pinned in the profile (profile add --audit-key)."),
    state: Path = typer.Option(None, "--state", help="Where this verifier keeps the last checkpoint it verified "
                               "(default: under ~/.config/eventward/audit-state, per log, as in home mode)."),
    no_state: bool = typer.Option(False, "--no-state", help="Neither read nor update the verifier's state."),
    as_json: bool = _JSON,
) -> None:
    """Verify the control plane's latest signed checkpoint against the pinned audit key, and that it
    extends the last checkpoint this verifier kept (a consistency proof): a checkpoint signed by
    another key, a smaller tree (rollback) or another history (fork) is refused (exit 8). The
    records themselves are recomputed only where the home is (audit verify in home mode)."""
    from eventward._internal.audit.signing import AuditVerifier
    from eventward._internal.audit.state import default_state_path, verify_served

    p = _remote().profile
    pinned = key if key is not None else p.audit_key
    if pinned is None:
        raise ConfigError(f"profile {p.name} pins no audit key: pass --key, or pin it with 'eventward profile add "
                          "... --audit-key VKEY' (print it with 'eventward audit public-key' where the home is), "
                          f"or set {AUDIT_KEY_ENV}")
    verifier = AuditVerifier.of(profiles.pin_text(pinned, "audit key") or "")
    path = None if no_state else (state or default_state_path(verifier.name))
    r = verify_served(verifier, _client().audit_consistency, state=path)
    doc = {"ok": True, "size": r.checkpoint.size, "root": base64.b64encode(r.checkpoint.root).decode(),
           "checkpoint_key": True, "state": None if path is None else str(path),
           "remembered_size": None if r.remembered is None else r.remembered.size,
           "saved_size": r.checkpoint.size if r.saved else None}
    if as_json:
        common.emit_json(doc)
        return
    _print(f"OK: checkpoint of {doc['size']} records signed by {verifier.name}, root {doc['root']}"
           + ("" if r.remembered is None else f"; extends the {r.remembered.size} verified before"))


@audit_app.command("prove", cls=ClientCommand)
def audit_prove(index: int = typer.Argument(..., help="Record index."),
                size: int = typer.Option(None, "--size", help="Tree size to prove against (default: now).")) -> None:
    """Inclusion proof of a record (JSON)."""
    common.emit_json(_client().prove(index, size))


@audit_app.command("certificate", cls=ClientCommand)
def audit_certificate(certificate: str = typer.Argument(..., metavar="CERTIFICATE",
                                                        help="Its id, e.g. erasure-42 (forget prints it)."),
                      as_json: bool = _JSON) -> None:
    """An erasure certificate, by its id."""
    cert = _client().certificate(certificate)
    if as_json:
        common.emit_json(cert)
        return
    for k in ("certificate", "subject_hash", "keys_destroyed", "issued_at", "complete_after", "audit_index"):
        if k in cert:
            _print(f"{k.replace('_', ' ')}: {cert[k]}")


@policy_app.command("explain", cls=ClientCommand)
def policy_explain(
    principal: str = typer.Argument(..., metavar="PRINCIPAL", help="Whom to explain for ('-': yourself)."),
    action: str = typer.Argument(..., help="e.g. subscribe, Subscribe, approve_schema"),
    resource: str = typer.Argument(..., help="Kind::id, e.g. Topic::orders, Class::pii"),
    event_type: str = typer.Option(None, "--event-type", help="Event type (publish/subscribe)."),
    as_json: bool = _JSON,
) -> None:
    """Decide one request against the control plane's policy and say what decided it."""
    from eventward._internal.cli.policy import parse_resource
    from eventward._internal.policy.spec import parse_action

    d = _client().explain(None if principal == "-" else principal, parse_action(action), parse_resource(resource),
                          event_type)
    if as_json:
        common.emit_json(d)
        return
    _print(str(d.get("explanation") or ("allowed" if d["allowed"] else "denied")))


@trust_app.command("list", cls=ClientCommand)
def trust_list(as_json: bool = _JSON) -> None:
    """Signing keys the control plane trusts: principal, purpose, status, what each may seal. Each
    entry is verified against the anchor pinned in your profile; entries it did not sign are not
    shown, and the command then fails (exit 8) saying how many."""
    from eventward._internal.control.anchor import public_key_from_text

    p = _remote().profile
    if p.anchor is None:
        raise ConfigError(f"profile {p.name} pins no anchor key, so trust entries cannot be verified: pin it with "
                          "'eventward profile add ... --anchor KEY' (print it with 'eventward trust anchor' where "
                          f"the home is), or set {ANCHOR_ENV}")
    entries, refused = _client().trust_entries(public_key_from_text(p.anchor))
    rows = [{"kid": k.kid, "principal": k.principal, "purpose": k.purpose, "suite": k.suite, "status": k.status,
             "may_seal": grants, "verified": True} for k, grants in entries]
    if as_json:
        common.emit_json({"keys": rows, "refused": refused})
    else:
        t = Table("kid", "principal", "purpose", "status", "may seal", title="trust registry (signed by the anchor)")
        for r in rows:
            may = r["may_seal"] or {}
            t.add_row(*(Text(str(r[k] or "-")) for k in ("kid", "principal", "purpose", "status")),
                      Text("; ".join(f"{topic}: {', '.join(types)}" for topic, types in may.items()) or "-"))
        common.console.print(t)
    if refused:
        raise SealError(f"trust entries from the control plane not signed by the pinned anchor: {len(refused)} "
                        f"(at position {', '.join(map(str, refused[:10]))}); refused, not shown",
                        reason="bad_statement")


@audit_app.command("tail", cls=ClientCommand)
def audit_tail(n: int = typer.Option(20, "-n", help="How many records, newest last (at most 1000)."),
               as_json: bool = _JSON) -> None:
    """The newest audit records (needs read_audit)."""
    records = _client().audit_records(n)
    if as_json:
        common.emit_json({"records": records})
        return
    t = Table()
    for name in ("#", "time", "principal", "action", "resource", "outcome", "reason", "meta"):
        t.add_column(name, overflow="fold")
    for r in records:
        meta = " ".join(f"{k}={v}" for k, v in r["meta"].items())
        cells = (str(r["index"]), r["time"], r["principal"], r["action"], r["resource"], r["outcome"], r["reason"],
                 meta)
        t.add_row(*(Text(str(c)) for c in cells))
    common.console.print(t)


@keys_app.command("status", cls=ClientCommand)
def keys_status(as_json: bool = _JSON) -> None:
    """Classes, KEK versions, key counts, holds and erasures (needs read_audit)."""
    st = _client().keys_status()
    if as_json:
        common.emit_json(st)
        return
    t = Table("class", "KEK", "live versions", "destroyed", "DEKs", "subjects", "erased keys", title="keys")
    for c in st["classes"]:
        t.add_row(c["class"], c["kek"], ", ".join(c["live_keks"]), ", ".join(c["destroyed_keks"]) or "-",
                  str(c["deks"]), str(c["subjects"]), str(c["erased_keys"]))
    common.console.print(t)
    _print(f"legal holds: {st['legal_holds']}   erasures: {st['erasures']}   "
           f"revocation epoch: {st['revocation_epoch']}")


@dlq_app.command("list", cls=ClientCommand)
def dlq_list(topic: str = typer.Argument(..., help="Source topic."),
             all_: bool = typer.Option(False, "--all", help="Include resolved (redriven) entries."),
             as_json: bool = _JSON) -> None:
    """Dead letters of a topic you may subscribe to (metadata only)."""
    doc = _client().dead_letters(topic, all_)
    if as_json:
        common.emit_json(doc)
        return
    t = Table("offset", "reason", "from", "event id", "type", "attempts", title=f"{topic}.dlq")
    for e in doc["entries"]:
        t.add_row(str(e["dlq_offset"]), Text(f"{e['code']}/{e['reason']}"), Text(f"{e['stream']}@{e['offset']}"),
                  Text(str(e.get("event_id") or "-")), Text(str(e.get("event_type") or "-")), str(e["attempts"]))
    common.console.print(t)
    if doc.get("more"):
        common.err_console.print("[yellow]note[/]: more entries than shown (the API's page limit)")


@service_app.command("approve", cls=ClientCommand)
def service_approve(
    request: Path = typer.Argument(..., help="The service's enrollment.json.", metavar="REQUEST"),
    seal: list[str] = typer.Option([], "--seal", help="TOPIC:TYPE the service may seal (repeat).",
                                   metavar="TOPIC:TYPE"),
    control_url: list[str] = typer.Option([], "--control-url", help="Control-plane URL (repeat for replicas).",
                                           metavar="URL"),
    nats: list[str] = typer.Option([], "--nats", help="NATS server URL for the direct data path (repeat).",
                                   metavar="URL"),
    days: int = typer.Option(30, "--days", help="TLS certificate lifetime.", min=1, max=397),
    out: Path = typer.Option(..., "--out", help="Where to write the grant.", metavar="FILE"),
) -> None:
    """Trust the service's keys, certify its TLS key and write the grant it installs (needs
    rotate_keys on the service's producer)."""
    from eventward._internal.cli.service import _may_seal

    try:
        raw = request.read_bytes()
    except OSError:
        raise InputError(f"cannot read enrollment request {request}") from None
    grant = _client().approve_service(raw, _may_seal(seal), days, control_url, nats)
    out.write_bytes(grant)
    _print(f"grant written to {out}: give it to the service (eventward service install)")


@client_app.command("alerts", cls=ClientCommand)
def alerts(n: int = typer.Option(100, "-n", help="How many, newest last (at most 1000)."),
           as_json: bool = _JSON) -> None:
    """Recorded alerts (serve's live monitor, monitor --record); needs read_audit."""
    rows = _client().alerts(n)
    if as_json:
        common.emit_json({"alerts": rows})
        return
    t = Table()
    for name in ("#", "time", "rule", "severity", "resource", "reason", "details"):
        t.add_column(name, overflow="fold")
    for a in rows:
        details = " ".join(f"{k}={v}" for k, v in a["meta"].items())
        cells = ("-" if a["index"] is None else str(a["index"]), a["time"], a["rule"], a["severity"], a["resource"],
                 a["reason"], details)
        t.add_row(*(Text(str(c)) for c in cells))
    common.console.print(t)


@client_app.command("lag", cls=ClientCommand)
def lag(threshold: int = typer.Option(None, "--threshold", min=0,
                                      help="Exit 1 when a group is this many events behind or more."),
        as_json: bool = _JSON) -> None:
    """Consumer lag per group and stream; needs read_audit."""
    groups = _client().lag()
    behind = {(g["group"], g["stream"]) for g in groups if threshold is not None and g["lag"] >= threshold}
    if as_json:
        common.emit_json({"groups": [{**g, "behind": (g["group"], g["stream"]) in behind} for g in groups]})
    else:
        t = Table("group", "stream", "committed", "end", "lag (events)")
        for g in groups:
            style = "bold red" if (g["group"], g["stream"]) in behind else None
            t.add_row(Text(g["group"]), Text(g["stream"]), str(g["committed"]), str(g["end"]),
                      Text(str(g["lag"]), style=style))
        common.console.print(t)
    if behind:
        raise typer.Exit(common.EXIT_PROBLEM)
