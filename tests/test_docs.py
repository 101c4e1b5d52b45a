"""The docs cannot rot: every command they show names a real command and real options, and every
Python snippet in them runs.

Commands are found in fenced shell blocks and in inline code spans of README.md, docs/*.md and
results/README.md. A `mochapy` or `galaxy-model` command is resolved through the click groups the
console scripts run, and each of its `--options` must be one that command accepts; a
`python benchmarks/...`, `python experiments/...` or `python tools/...` script must exist. Python
blocks are executed in a scratch directory holding the repository's examples, with tiny built-in
splits.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "results" / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SCRIPT_DIRS = "benchmarks|experiments|tools"
INLINE = re.compile(rf"`((?:mochapy|galaxy-model|python3? (?:{SCRIPT_DIRS})/)[^`\n]*)`")


def _groups() -> dict[str, click.Group]:
    from galaxy_model.cli import main as galaxy_main
    from mochapy.cli import main as mochapy_main

    return {"mochapy": mochapy_main, "galaxy-model": galaxy_main}


def _fenced(path: Path, languages: set[str]) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(path.read_text()) if m.group(1) in languages]


def _command_lines(path: Path) -> list[str]:
    """Every command the page shows: inline spans, and shell lines (split at && and |)."""
    text = path.read_text()
    lines = [m.group(1) for m in INLINE.finditer(FENCE.sub("", text))]
    for block in _fenced(path, {"bash", "sh", "console", ""}):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            lines.extend(part.strip() for part in re.split(r"&&|\|", line))
    return [line for line in lines if line.split(" ", 1)[0] in {"mochapy", "galaxy-model"}
            or re.match(rf"python3? ({SCRIPT_DIRS})/", line)]


def _usage_tokens(line: str) -> list[str]:
    """The words of a command as written, usage brackets and alternatives dropped."""
    line = re.sub(r"[\[\]]", " ", line).replace("...", " ").replace("|", " ")
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _check_command(line: str) -> str | None:
    """Why `line` does not name a real command with real options, or None when it does."""
    tokens = _usage_tokens(line)
    if tokens[0].startswith("python"):
        script = ROOT / tokens[1]
        return None if script.is_file() else f"no such script {tokens[1]}"
    group = _groups()[tokens[0]]
    if len(tokens) < 2 or tokens[1].startswith("-"):
        return None
    ctx = click.Context(group)
    command = group.get_command(ctx, tokens[1])
    if command is None:
        return f"{tokens[0]} has no command {tokens[1]!r}"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known |= {"--help"}
    for token in tokens[2:]:
        option = token.split("=", 1)[0]
        if option.startswith("--") and option not in known:
            return f"{tokens[0]} {tokens[1]} has no option {option}"
    return None


COMMANDS = [(path.relative_to(ROOT).as_posix(), line)
            for path in DOCS for line in _command_lines(path)]


def test_the_docs_show_commands() -> None:
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "docs/engine.md", "docs/galaxy_model.md"} <= pages


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_documented_command_exists(page: str, line: str) -> None:
    problem = _check_command(line)
    assert problem is None, f"{page}: `{line}`: {problem}"


def test_the_command_check_catches_a_wrong_option() -> None:
    assert _check_command("mochapy run net.yaml --max-iter 3") is None
    assert "no option --max-iters" in _check_command("mochapy run net.yaml --max-iters 3")
    assert "no command" in _check_command("galaxy-model evaluat --run r")


SNIPPETS = [(path.relative_to(ROOT).as_posix(), i, code) for path in DOCS
            for i, code in enumerate(_fenced(path, {"python"}))]


@pytest.mark.slow
@pytest.mark.parametrize(("page", "index", "code"), SNIPPETS,
                         ids=[f"{p}#{i}" for p, i, _ in SNIPPETS])
def test_every_python_snippet_runs(page: str, index: int, code: str, tmp_path: Path) -> None:
    for folder in ("examples", "results"):
        os.symlink(ROOT / folder, tmp_path / folder)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, MPLBACKEND="Agg", GALAXY_MODEL_CACHE=str(tmp_path / "cache"),
               GALAXY_MODEL_BUILTIN_SIZES="train=64,valid=32,heldout=24")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{page} snippet {index} failed:\n{done.stderr[-3000:]}"
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
