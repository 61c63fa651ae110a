"""Shared CLI plumbing: the selected home, the console, and typed-error reporting."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import typer
from rich.console import Console

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


def run(app: typer.Typer) -> None:
    """Run the app; typed errors become one clear line and exit code 2, never a traceback."""
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit codes instead of raising them
    except EventwardError as e:
        err_console.print(f"[bold red]error[/] ({e.code}): {e.message}", highlight=False)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)
