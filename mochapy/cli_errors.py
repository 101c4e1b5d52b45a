"""Turn user-facing errors into one line on stderr and a non-zero exit, for every front end."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import TextIO, TypeVar

import click

from mochapy.errors import MochaError

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


def one_line_errors(func: F) -> F:
    """Wrap a click command so MochaError/OSError become `error: ...` and exit code 2, and
    warnings print as one `warning: ...` line each (not Python's two lines with source)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except MochaError as exc:
            message = str(exc)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            message = f"{exc.strerror or exc}{':' if where else ''}{where}"
        except KeyboardInterrupt:
            message = "interrupted"
        click.echo(f"error: {' '.join(message.split())}", err=True)
        sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    click.echo(f"warning: {' '.join(str(message).split())}", err=True)
