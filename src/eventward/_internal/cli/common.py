"""Shared CLI plumbing: the selected home, the consoles, ``--json``, exit codes and typed-error reporting.

Conventions every command follows (documented for users in docs/cli.md):

- Output for people goes through :data:`console` (tables, reports). When stdout is not a TTY
  nothing is coloured and nothing is wrapped (width ``COLUMNS`` if set, else unlimited), so a
  pipe gets whole lines; ``--json`` gives a stable document instead (:func:`emit_json`).
- Exit codes come from :data:`EXIT_CODES`, the one map from eventward.errors classes to codes.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from eventward import errors
from eventward._internal.home import Home

# --- exit codes ---------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_PROBLEM = 1  # a check ran and found a problem (schema check, validate, audit verify)
EXIT_USAGE = 2  # bad command line (click's usage errors)
EXIT_FORBIDDEN = 3
EXIT_NOT_FOUND = 4
EXIT_INVALID = 5
EXIT_UNAVAILABLE = 6
EXIT_CONFLICT = 7
EXIT_REFUSED = 8  # refused as unsafe: a seal, token, replay or integrity check failed
EXIT_CONFIG = 9
EXIT_ERROR = 10  # any other typed error
EXIT_INTERRUPTED = 130

# First match wins, so subclasses that belong to another class of failure come before their bases.
EXIT_CODES: tuple[tuple[type[errors.EventwardError], int], ...] = (
    (errors.AuthenticationError, EXIT_FORBIDDEN),
    (errors.AccessDenied, EXIT_FORBIDDEN),
    (errors.KeyNotFound, EXIT_NOT_FOUND),
    (errors.KeyDestroyed, EXIT_NOT_FOUND),
    (errors.NotFoundError, EXIT_NOT_FOUND),
    (errors.SchemaSecurityError, EXIT_INVALID),
    (errors.InputError, EXIT_INVALID),
    (errors.QuotaExceeded, EXIT_UNAVAILABLE),
    (errors.KeyIntegrityError, EXIT_REFUSED),
    (errors.KeyServiceError, EXIT_UNAVAILABLE),
    (errors.TransportError, EXIT_UNAVAILABLE),
    (errors.AuditUnavailable, EXIT_UNAVAILABLE),
    (errors.StoreUnavailable, EXIT_UNAVAILABLE),
    (errors.ApprovalRequired, EXIT_CONFLICT),
    (errors.ConflictError, EXIT_CONFLICT),
    (errors.SecurityError, EXIT_REFUSED),
    (errors.ConfigError, EXIT_CONFIG),
)


def exit_code(error: errors.EventwardError) -> int:
    """The documented exit code of a typed error (docs/cli.md)."""
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_ERROR


# --- consoles -----------------------------------------------------------------------------------

_UNWRAPPED = 1 << 16  # "no wrapping": wider than any line a command prints


def _console(stderr: bool) -> Console:
    """A TTY gets Rich's defaults; a pipe or file gets no colour and no wrapping (COLUMNS if set)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    try:
        width = int(os.environ.get("COLUMNS", "")) or _UNWRAPPED
    except ValueError:
        width = _UNWRAPPED
    return Console(stderr=stderr, width=width, soft_wrap=True, color_system=None, highlight=False)


console = _console(stderr=False)
err_console = _console(stderr=True)


def print_code(text: str, lexer: str) -> None:
    """A document (YAML, Cedar, JSON): highlighted on a TTY, the exact text otherwise."""
    if console.is_terminal:
        from rich.syntax import Syntax

        console.print(Syntax(text, lexer, word_wrap=True))
    else:
        console.out(text.rstrip("\n"), highlight=False)


# --- --json -------------------------------------------------------------------------------------

JSON_HELP = "Print one JSON document instead (stable fields, see docs/cli.md)."


def json_option() -> Any:
    """``--json`` for commands that print a table or a report."""
    return typer.Option(False, "--json", help=JSON_HELP)


def emit_json(doc: object) -> None:
    """One JSON document on stdout, not through Rich: no markup, no wrapping, no colour."""
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    sys.stdout.flush()


# --- help text ----------------------------------------------------------------------------------

_TYPE_LABELS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "bool": "BOOLEAN", "Path": "PATH"}


def readable_help() -> None:
    """Click-style metavars in ``--help`` (``TOPIC``, ``TEXT``, no type on flags) instead of
    typer's ``{topic}`` and ``<str>``. Patched once, here, on typer's parameter classes."""
    from typer import core

    if getattr(core, "_eventward_readable", False):
        return
    base_type = core._TyperParameter.display_type

    def display_type(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False):
            return None
        label = base_type(self, ctx).strip("<>")
        many = label.startswith("list[") and label.endswith("]")
        inner = label[5:-1] if many else label
        text = _TYPE_LABELS.get(inner, inner.upper())
        return text + "..." if many else text

    def usage_name(self: Any) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name + "..." if self.nargs != 1 else name

    core._TyperParameter.display_type = display_type
    core.TyperArgument.display_name_raw = property(  # type: ignore[assignment]
        lambda self: self.metavar if self.metavar is not None else self.name.upper()
    )
    core.TyperArgument._usage_display_name = usage_name
    core._eventward_readable = True


def examples(*commands: str) -> str:
    """A ``--help`` epilog listing example command lines (shown verbatim, never as markup)."""
    return "Examples:\n\n" + "\n\n".join(f"  $ {escape(c)}" for c in commands)


# --- home and logging ---------------------------------------------------------------------------


@dataclass
class _State:
    home: str | None = None
    remote: Any = None  # client mode (cli/remote.py): the control plane and credentials; None: home mode


STATE = _State()


def home() -> Home:
    if STATE.remote is not None:  # a command must never fall back to a home in client mode
        raise errors.NotInClientMode("this command opens a home, which client mode never does: "
                                     "run it where the home is (eventward --home DIR ...)")
    return Home.resolve(STATE.home)


def setup_logging(level: int = logging.WARNING) -> None:
    """Warnings (denials, gaps) go to ``run/eventward.log`` in the home; only errors reach stderr,
    so a command's own output stays readable. Log records never carry payloads."""
    root = logging.getLogger("eventward")
    root.setLevel(level)
    root.propagate = False
    for old in list(root.handlers):  # idempotent: in-process runs (tests, benches) call it repeatedly
        root.removeHandler(old)
        old.close()
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.ERROR)
    root.addHandler(stderr)
    if STATE.remote is not None:
        return  # client mode: no home to log into
    h = home()
    if h.root.is_dir():
        try:
            h.run_dir.mkdir(exist_ok=True, mode=0o700)
            fh = logging.FileHandler(h.run_dir / "eventward.log")
        except OSError as e:
            # A read-only home (a mounted backup, an auditor's copy) must still serve read-only
            # commands: warnings go to stderr instead, and the command goes on.
            stderr.setLevel(level)
            root.warning("cannot write %s (%s): logging to stderr", h.run_dir / "eventward.log", e.strerror)
            return
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(fh)


def run(app: typer.Typer) -> None:
    """Run the app; a typed error becomes one clear line and its documented exit code, never a traceback."""
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit codes instead of raising them
    except errors.EventwardError as e:
        # escaped: messages name user input (a principal, a stream), which must not be read as markup
        err_console.print(f"[bold red]error[/] ({e.code}): {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(exit_code(e))
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors
        import click

        # typer >= 0.16 vendors click: its usage errors are typer._click exceptions, not click's
        if isinstance(e, click.exceptions.ClickException | typer.TyperException) and hasattr(e, "show"):
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)
