"""Operator profiles: where the CLI's client mode finds a control plane and the operator's credentials.

``profiles.toml`` (in ``$EVENTWARD_PROFILE_DIR``, else ``$XDG_CONFIG_HOME/eventward``, else
``~/.config/eventward``) holds named profiles: the control plane's URLs (tried in order, with
fail-over), the CA that signed its certificate, and the operator's client certificate and key
*paths* (or a JWT file path). It never holds a secret itself: a profile whose fields look like key
material, or that names a key or token file group/world can read, is refused, and the file itself
must be 0600 and no symbolic link (it says where the operator's key is and which servers it trusts).

    current = "ops"

    [profiles.ops]
    urls = ["https://cp1.example:8443", "https://cp2.example:8443"]
    ca = "/home/ops/.config/eventward/ca.crt"
    cert = "/home/ops/.config/eventward/ops.crt"
    key = "/home/ops/.config/eventward/ops.key"
    anchor = "3q2-7w..."        # the control plane's statement key (eventward trust anchor, out of band)
    audit_key = "ew-audit+..."  # the audit log's verifier key (eventward audit public-key, out of band)

The two public keys are pinned when the profile is added, from the control plane's host and not
over the API (what they check is what the API sends): ``trust list`` shows only trust entries the
anchor signed, and ``audit verify`` accepts only checkpoints the audit key signed.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import typer
from rich.table import Table

from eventward._internal.cli import common
from eventward.errors import ConfigError, EventwardError, InputError, NotFoundError

PROFILE_DIR_ENV = "EVENTWARD_PROFILE_DIR"
FILE_NAME = "profiles.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELDS = {"urls", "ca", "cert", "key", "token_file", "anchor", "audit_key"}
_PINS = ("anchor", "audit_key")  # public keys, as text: pinned at `profile add`, never fetched
_MAX_URLS = 16


def profile_dir() -> Path:
    """``$EVENTWARD_PROFILE_DIR``, else ``$XDG_CONFIG_HOME/eventward``, else ``~/.config/eventward``."""
    if os.environ.get(PROFILE_DIR_ENV):
        return Path(os.environ[PROFILE_DIR_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "eventward"


def profiles_path() -> Path:
    return profile_dir() / FILE_NAME


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError("a profile name is 1-64 letters, digits, '_', '.' or '-'", field="profile")
    return name


def parse_urls(text: str | list[str]) -> tuple[str, ...]:
    """Control-plane URLs (comma-separated or a list): https only, no credentials, no path or query."""
    items = [u.strip() for u in (text.split(",") if isinstance(text, str) else text)]
    urls = tuple(u.rstrip("/") for u in items if u)
    if not urls or len(urls) > _MAX_URLS:
        raise InputError(f"give 1 to {_MAX_URLS} control-plane URLs", field="urls")
    for u in urls:
        try:
            parts = urlsplit(u)
            port = parts.port
        except ValueError:
            raise InputError("a control-plane URL is not a valid URL", field="urls") from None
        del port
        if parts.scheme != "https" or not parts.hostname:
            raise InputError("control-plane URLs must be https://HOST[:PORT] (mTLS or a token over TLS)",
                             field="urls")
        if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
            raise InputError("a control-plane URL carries no credentials, path, query or fragment: "
                             "credentials are file paths in the profile", field="urls")
    return urls


@dataclass(frozen=True)
class Profile:
    """One control plane and the operator's credentials (paths only)."""

    name: str
    urls: tuple[str, ...]
    ca: str
    cert: str | None = None
    key: str | None = None
    token_file: str | None = None
    anchor: str | None = None  # the control plane's anchor public key (trust entries, grants, notices)
    audit_key: str | None = None  # the audit log's verifier key (vkey)

    @property
    def auth(self) -> str:
        return "jwt" if self.token_file else "mtls"

    def check(self) -> None:
        """Refuse what would let a secret leak or be swapped: inline key material, relative paths,
        both or neither of a certificate and a token, a key or token file others may read."""
        check_name(self.name)
        parse_urls(list(self.urls))
        paths = {"ca": self.ca, "cert": self.cert, "key": self.key, "token_file": self.token_file}
        for what, value in paths.items():
            if value is None:
                continue
            looks_like_jwt = value.count(".") == 2 and "/" not in value if isinstance(value, str) else False
            if not isinstance(value, str) or "-----BEGIN" in value or "\n" in value or looks_like_jwt:
                raise ConfigError(f"profile {self.name}: {what} must be a file path, never the key, "
                                  "certificate or token itself")
            if not Path(value).is_absolute():
                raise ConfigError(f"profile {self.name}: {what} must be an absolute path")
        if (self.cert is None) != (self.key is None):
            raise ConfigError(f"profile {self.name}: give both cert and key (mTLS)")
        if (self.cert is None) == (self.token_file is None):
            raise ConfigError(f"profile {self.name}: give either cert and key (mTLS) or token_file (JWT)")
        check_pins(self.name, self.anchor, self.audit_key)

    def secret_files(self) -> list[Path]:
        return [Path(p) for p in (self.key, self.token_file) if p is not None]

    def to_doc(self) -> dict[str, object]:
        doc: dict[str, object] = {"name": self.name, "urls": list(self.urls), "ca": self.ca, "auth": self.auth}
        for k in ("cert", "key", "token_file", *_PINS):
            if getattr(self, k) is not None:
                doc[k] = getattr(self, k)
        return doc


def check_pins(name: str, anchor: str | None, audit_key: str | None) -> None:
    """The pinned public keys parse (ConfigError naming the field otherwise, never echoing it)."""
    from eventward._internal.audit.signing import AuditVerifier
    from eventward._internal.control.anchor import public_key_from_text

    try:
        if anchor is not None:
            public_key_from_text(anchor)
    except (InputError, ValueError):
        raise ConfigError(f"profile {name}: anchor is not an Ed25519 anchor public key "
                          "(print it with 'eventward trust anchor' where the home is)") from None
    try:
        if audit_key is not None:
            AuditVerifier.of(audit_key)
    except (EventwardError, ValueError):
        raise ConfigError(f"profile {name}: audit_key is not an audit verifier key "
                          "(print it with 'eventward audit public-key' where the home is)") from None


@dataclass
class Profiles:
    current: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)

    def get(self, name: str | None) -> Profile:
        """The named profile, or the current one for None."""
        wanted = name if name is not None else self.current
        if wanted is None:
            raise NotFoundError("no profile in use: give --profile NAME, or run 'eventward profile use NAME'")
        found = self.profiles.get(wanted)
        if found is None:
            raise NotFoundError(f"no profile {wanted!r} in {profiles_path()} (eventward profile list)")
        return found


def load(path: Path | None = None) -> Profiles:
    """The profiles file, or no profiles if there is none; a readable-by-others file is refused."""
    from eventward._internal.home import read_secret

    path = path or profiles_path()
    if not path.exists() and not path.is_symlink():
        return Profiles()
    raw = read_secret(path)  # 0600, no symlink: it decides which servers and keys the CLI trusts
    try:
        doc = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    unknown = set(doc) - {"current", "profiles"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    current = doc.get("current")
    if current is not None and not isinstance(current, str):
        raise ConfigError(f"{path}: current must be a profile name")
    table = doc.get("profiles", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [profiles] must be a table")
    out: dict[str, Profile] = {}
    for name, body in table.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: profiles.{name} must be a table")
        extra = set(body) - _FIELDS
        if extra:
            raise ConfigError(f"{path}: profiles.{name} has unknown key(s) {', '.join(sorted(extra))} "
                              f"(allowed: {', '.join(sorted(_FIELDS))}; secrets are never inline)")
        try:
            p = Profile(name, parse_urls(body.get("urls", [])), body.get("ca", ""), body.get("cert"),
                        body.get("key"), body.get("token_file"), body.get("anchor"), body.get("audit_key"))
        except InputError as e:
            raise ConfigError(f"{path}: profiles.{name}: {e.message}") from None
        p.check()
        out[name] = p
    if current is not None and current not in out:
        raise ConfigError(f"{path}: current names no profile ({current!r})")
    return Profiles(current, out)


def _toml(value: object) -> str:
    # JSON string escapes are TOML basic-string escapes; non-ASCII is written as UTF-8.
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def save(profiles: Profiles, path: Path | None = None) -> Path:
    """Write the whole file atomically, 0600, in a 0700 directory."""
    from eventward._internal.home import write_secret

    path = path or profiles_path()
    lines = ["# eventward operator profiles: paths only, never secrets (eventward profile --help)"]
    if profiles.current is not None:
        lines.append(f"current = {_toml(profiles.current)}")
    for p in profiles.profiles.values():
        lines += ["", f"[profiles.{_toml(p.name)}]", f"urls = {_toml(list(p.urls))}", f"ca = {_toml(p.ca)}"]
        for k in ("cert", "key", "token_file", *_PINS):
            if getattr(p, k) is not None:
                lines.append(f"{k} = {_toml(getattr(p, k))}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret(path, ("\n".join(lines) + "\n").encode())
    return path


# --- commands -----------------------------------------------------------------------------------

profile_app = typer.Typer(
    help="Operator profiles for client mode: control-plane URLs, CA, your certificate and key paths.",
    no_args_is_help=True,
)
_JSON = common.json_option()


def _abs(p: Path | None) -> str | None:
    return None if p is None else str(p.expanduser().resolve())


def pin_text(value: str | None, what: str) -> str | None:
    """A public key given as its text, or as a file holding it (for the anchor also a service's
    grant.json, which carries it); None stays None."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        return value.strip()
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"cannot read {what} file {path}") from None
    if what == "anchor" and text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("anchor"), str):
            raise ConfigError(f"{path} is JSON but not a grant carrying the anchor")
        return str(doc["anchor"])
    return text


@profile_app.command("add", epilog=common.examples(
    "eventward profile add ops --url https://cp1:8443,https://cp2:8443 --ca ca.crt --cert ops.crt --key ops.key "
    "--use",
    "eventward --profile ops forget c1",
))
def add_cmd(
    name: str = typer.Argument(..., metavar="NAME"),
    url: list[str] = typer.Option(..., "--url", metavar="URL[,URL...]",
                                  help="Control-plane URL(s), tried in order with fail-over (repeatable)."),
    ca: Path = typer.Option(..., "--ca", help="The CA that signed the control plane's certificate (PEM)."),
    cert: Path = typer.Option(None, "--cert", help="Your client certificate (PEM)."),
    key: Path = typer.Option(None, "--key", help="Your client key (PEM, mode 0600)."),
    token_file: Path = typer.Option(None, "--token-file", help="A file holding your JWT (mode 0600), "
                                    "instead of --cert/--key."),
    anchor: str = typer.Option(None, "--anchor", metavar="KEY|FILE", help="Pin the control plane's anchor "
                               "public key ('eventward trust anchor' where the home is, or a service's grant.json): "
                               "'trust list' shows only entries it signed."),
    audit_key: str = typer.Option(None, "--audit-key", metavar="VKEY|FILE", help="Pin the audit verifier key "
                                  "('eventward audit public-key' where the home is): 'audit verify' checks "
                                  "checkpoints against it."),
    use: bool = typer.Option(False, "--use", help="Make it the profile in use."),
    replace: bool = typer.Option(False, "--replace", help="Replace a profile of that name."),
) -> None:
    """Add a profile (paths are stored absolute; the files are checked, never copied; the two
    public keys are pinned as text)."""
    from eventward._internal.home import read_secret

    check_name(name)
    urls = parse_urls([u for item in url for u in item.split(",")])
    profile = Profile(name, urls, _abs(ca) or "", _abs(cert), _abs(key), _abs(token_file),
                      pin_text(anchor, "anchor"), pin_text(audit_key, "audit key"))
    profile.check()
    for f in [Path(profile.ca), *(Path(p) for p in (profile.cert,) if p)]:
        if not f.is_file():
            raise ConfigError(f"{f} does not exist or is not a file")
    for f in profile.secret_files():
        read_secret(f)  # refused now, not at first use, if others may read it
    profiles = load()
    if name in profiles.profiles and not replace:
        raise InputError(f"profile {name!r} exists; pass --replace to overwrite it")
    profiles.profiles[name] = profile
    if use or profiles.current is None:
        profiles.current = name
    path = save(profiles)
    in_use = " (in use)" if profiles.current == name else ""
    common.console.print(f"profile {name}{in_use} saved in {path}", highlight=False, markup=False)


@profile_app.command("list", epilog=common.examples("eventward profile list --json"))
def list_cmd(as_json: bool = _JSON) -> None:
    """Every profile; the one in use is marked."""
    profiles = load()
    if as_json:
        common.emit_json({"current": profiles.current, "file": str(profiles_path()),
                          "profiles": [{**p.to_doc(), "current": p.name == profiles.current}
                                       for p in profiles.profiles.values()]})
        return
    t = Table("", "name", "auth", "urls")
    for p in profiles.profiles.values():
        t.add_row("*" if p.name == profiles.current else "", p.name, p.auth, ", ".join(p.urls))
    common.console.print(t)


@profile_app.command("use", epilog=common.examples("eventward profile use ops", "eventward profile use --none"))
def use_cmd(
    name: str = typer.Argument(None, metavar="NAME"),
    none: bool = typer.Option(False, "--none", help="Use no profile: commands open a home again."),
) -> None:
    """Make NAME the profile in use: commands then run against its control plane unless --home is given."""
    if none == (name is not None):
        raise InputError("give a profile NAME or --none")
    profiles = load()
    if name is not None:
        profiles.get(check_name(name))
    profiles.current = name
    save(profiles)
    common.console.print(f"profile in use: {name}" if name else "no profile in use", highlight=False, markup=False)


@profile_app.command("show", epilog=common.examples("eventward profile show ops --json"))
def show_cmd(name: str = typer.Argument(None, metavar="NAME", help="Default: the profile in use."),
             as_json: bool = _JSON) -> None:
    """One profile and whether its files are usable (the key and token files must be 0600)."""
    from eventward._internal.home import read_secret

    profiles = load()
    p = profiles.get(name)
    problems: list[str] = []
    for f in [Path(p.ca), *(Path(x) for x in (p.cert,) if x)]:
        if not f.is_file():
            problems.append(f"{f} is missing")
    for f in p.secret_files():
        try:
            read_secret(f)
        except ConfigError as e:
            problems.append(e.message)
    if as_json:
        common.emit_json({**p.to_doc(), "current": p.name == profiles.current, "problems": problems})
        return
    t = Table(show_header=False, title=f"profile {p.name}" + (" (in use)" if p.name == profiles.current else ""))
    for k, v in p.to_doc().items():
        if k != "name":
            t.add_row(k, ", ".join(v) if isinstance(v, list) else str(v))
    common.console.print(t)
    for line in problems:
        common.err_console.print(f"[yellow]problem[/]: {line}", highlight=False)


@profile_app.command("remove")
def remove_cmd(name: str = typer.Argument(..., metavar="NAME")) -> None:
    """Remove a profile (the files it names are left alone)."""
    profiles = load()
    profiles.get(check_name(name))
    del profiles.profiles[name]
    if profiles.current == name:
        profiles.current = None
    save(profiles)
    common.console.print(f"profile {name} removed", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``eventward profile`` to the root app (it works in both modes: it touches no home)."""
    app.add_typer(profile_app, name="profile")
