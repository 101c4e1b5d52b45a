"""exit_on_user_error: the commands' one-line error handling for scripts that are not click
commands (experiments/*.py)."""

from __future__ import annotations

import errno

import pytest

from mochapy.cli_errors import EXIT_USER_ERROR, exit_on_user_error
from mochapy.errors import ConfigError


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (ConfigError("plan.yaml: variant 'x':\n  unknown field"),
         "error: sensitivity: plan.yaml: variant 'x': unknown field"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "runs/none"),
         "error: sensitivity: No such file or directory: runs/none"),
        (KeyboardInterrupt(), "error: sensitivity: interrupted"),
    ],
    ids=["mocha-error", "os-error", "ctrl-c"],
)
def test_a_user_error_is_one_line_and_exit_code_2(raised: BaseException, line: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped, exit_on_user_error("sensitivity"):
        raise raised
    assert stopped.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == line + "\n"


def test_without_a_program_name_the_line_has_no_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit), exit_on_user_error():
        raise ConfigError("net.yaml: bad")
    assert capsys.readouterr().err == "error: net.yaml: bad\n"


def test_other_errors_and_clean_exits_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ZeroDivisionError), exit_on_user_error("x"):
        raise ZeroDivisionError
    with exit_on_user_error("x"):
        value = 1
    assert value == 1 and capsys.readouterr().err == ""
