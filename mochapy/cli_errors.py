"""Turn user-facing errors into one line on stderr and a non-zero exit, for every front end."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import click

from mochapy.errors import MochaError

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


def one_line_errors(func: F) -> F:
    """Wrap a click command so MochaError/OSError become `error: ...` and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MochaError as exc:
            message = " ".join(str(exc).split())
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            message = f"{exc.strerror or exc}{':' if where else ''}{where}"
        except KeyboardInterrupt:
            message = "interrupted"
        click.echo(f"error: {message}", err=True)
        sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
