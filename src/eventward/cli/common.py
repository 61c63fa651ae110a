"""Shared CLI plumbing: the selected home, the console, and typed-error reporting."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import typer
from rich.console import Console
from rich.markup import escape

from eventward.errors import EventwardError
from eventward.home import Home

console = Console()
err_console = Console(stderr=True)


@dataclass
class _State:
    home: str | None = None


STATE = _State()


def home() -> Home:
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
    h = home()
    if h.root.is_dir():
        h.run_dir.mkdir(exist_ok=True, mode=0o700)
        fh = logging.FileHandler(h.run_dir / "eventward.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(fh)


def run(app: typer.Typer) -> None:
    """Run the app; typed errors become one clear line and exit code 2, never a traceback."""
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit codes instead of raising them
    except EventwardError as e:
        # escaped: messages name user input (a principal, a stream), which must not be read as markup
        err_console.print(f"[bold red]error[/] ({e.code}): {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
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
