"""click's own usage errors print as one `error: ...` line naming the command, exit code 2, like
every other error of both command-line front ends."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from galaxy_model.cli import main as galaxy_model_main
from mochapy.cli import main as mochapy_main


@pytest.mark.parametrize(
    ("cli", "args", "names"),
    [
        (mochapy_main, ["run", "--bogus", "net.yaml"], ["mochapy run", "'--bogus'"]),
        (mochapy_main, ["run"], ["mochapy run", "'NET_YAML'"]),
        (mochapy_main, ["frob"], ["mochapy:", "'frob'"]),
        (mochapy_main, ["--bogus"], ["mochapy:", "'--bogus'"]),
        (mochapy_main, ["check", "--backend", "tpu", "net.yaml"], ["mochapy check", "'--backend'"]),
        (mochapy_main, ["run", "--allow-changed", "net.yaml"], ["mochapy run", "--resume"]),
        (galaxy_model_main, ["evaluate", "--bogus"], ["galaxy-model evaluate", "'--bogus'"]),
        (galaxy_model_main, ["encode"], ["galaxy-model encode", "'--run'"]),
        (galaxy_model_main, ["nope"], ["galaxy-model:", "'nope'"]),
    ],
    ids=["unknown-option", "missing-argument", "unknown-command", "unknown-group-option",
         "bad-choice", "usage-error-raised-by-a-command", "gm-unknown-option", "gm-missing-option",
         "gm-unknown-command"],
)
def test_a_usage_error_is_one_line_naming_the_command(cli: click.Group, args: list[str],
                                                      names: list[str]) -> None:
    prog = "mochapy" if cli is mochapy_main else "galaxy-model"
    result = CliRunner().invoke(cli, args, prog_name=prog)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(name in lines[0] for name in names), lines[0]


def test_help_and_version_are_untouched() -> None:
    assert CliRunner().invoke(mochapy_main, ["--help"], prog_name="mochapy").exit_code == 0
    result = CliRunner().invoke(mochapy_main, ["--version"], prog_name="mochapy")
    assert result.exit_code == 0 and "version" in result.stdout
