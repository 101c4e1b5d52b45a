"""Turn user-facing errors into one line on stderr and a non-zero exit, for every front end:
errors the commands raise (`one_line_errors`) and click's own usage errors (`OneLineErrorGroup`).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeVar

import click

from mochapy.errors import MochaError

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


def one_line_errors(func: F) -> F:
    """Wrap a click command so MochaError/OSError become `error: ...` and exit code 2, and
    warnings print as one `warning: ...` line each (not Python's two lines with source)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with exit_on_user_error():
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def exit_on_user_error(program: str | None = None) -> Iterator[None]:
    """Turn a MochaError, OSError or Ctrl-C inside the block into one `error: [program: ]...`
    line on stderr and exit code 2: the commands' handling, for scripts that are not click
    commands (experiments/*.py)."""
    try:
        yield
        return
    except MochaError as exc:
        message = str(exc)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        message = f"{exc.strerror or exc}{':' if where else ''}{where}"
    except KeyboardInterrupt:
        message = "interrupted"
    prefix = f"{program}: " if program else ""
    click.echo(f"error: {prefix}{' '.join(message.split())}", err=True)
    sys.exit(EXIT_USER_ERROR)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    click.echo(f"warning: {' '.join(str(message).split())}", err=True)


class OneLineErrorGroup(click.Group):
    """A click group whose usage errors (unknown option or command, missing argument, bad value)
    print as one `error: <command>: ...` line, exit code 2, instead of click's usage block."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:  # the group's own options, e.g. `mochapy --bogus`
            _show_in_one_line(exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # a subcommand's arguments, or its UsageError
            _show_in_one_line(exc)
            raise


def _show_in_one_line(exc: click.ClickException) -> None:
    """Make click's standalone handler print `exc` as one line (it calls exc.show())."""
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see {ctx.command_path} --help)" if isinstance(exc, click.UsageError) and ctx else ""
    line = f"error: {where}{' '.join(exc.format_message().split())}{hint}"

    def show(file: TextIO | None = None) -> None:
        click.echo(line, err=True)

    exc.show = show  # type: ignore[method-assign]
