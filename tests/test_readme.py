"""The README stays true: two Quick start commands, the same test command as CI, valid examples."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shlex
from pathlib import Path

import pytest

import labelscan
from labelscan.cli import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CI_RUN = REPO / ".ci" / "run"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.DOTALL | re.MULTILINE)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def blocks(text: str, languages=None) -> list[str]:
    return [body for language, body in FENCE.findall(text) if languages is None or language in languages]


def quick_start_commands() -> list[str]:
    found = blocks(section("Quick start"))
    assert len(found) == 2, f"Quick start must hold exactly two fenced commands, found {len(found)}"
    commands = []
    for body in found:
        lines = [line for line in body.splitlines() if line.strip()]
        assert len(lines) == 1, f"each Quick start command is a single shell line, got {lines}"
        commands.append(lines[0].strip())
    return commands


def test_quick_start_has_exactly_two_setup_commands():
    demo, tests = quick_start_commands()
    assert demo.startswith("python3 -m venv .venv && ") and demo.endswith("labelscan demo")
    assert tests.startswith("python3 -m venv .venv && ") and tests.endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command():
    *setup, test_command = [part.strip() for part in quick_start_commands()[1].split("&&")]
    assert test_command == ".venv/bin/python -m pytest -q"
    script = CI_RUN.read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for step in setup:
        assert step in lines, f".ci/run does not run {step!r} as its own line"
    assert any(line == test_command or line.startswith(test_command + " ||") for line in lines), (
        f".ci/run does not run the README's test command {test_command!r}")
    assert "set -euo pipefail" in lines
    assert re.search(r'"\$status" -eq 5', script), ".ci/run must treat pytest exit code 5 as success"
    assert script.startswith("#!/usr/bin/env bash") and os.access(CI_RUN, os.X_OK)


def test_entry_point_matches_readme():
    pyproject = (REPO / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    assert re.search(r'^labelscan\s*=\s*"labelscan\.cli:main"', pyproject, re.MULTILINE)
    assert re.search(r"^test\s*=\s*\[", pyproject, re.MULTILINE)


def test_linked_docs_exist():
    for target in re.findall(r"\]\(((?!https?://|#)[^)]+)\)", README):
        if target != "docs/benchmarks.md":  # written by the benchmark runs
            assert (REPO / target).exists(), f"README links missing {target}"


def test_python_example_uses_the_real_api():
    (code,) = blocks(section("Python"), {"python"})
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "labelscan":
            assert hasattr(labelscan, node.attr), f"labelscan.{node.attr} does not exist"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "labelscan"):
            parameters = inspect.signature(getattr(labelscan, node.func.attr)).parameters
            for keyword in node.keywords:
                assert keyword.arg in parameters, f"labelscan.{node.func.attr} has no argument {keyword.arg}"


def cli_lines():
    for body in blocks(README, {"bash", "sh", ""}):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("labelscan "):
                yield shlex.split(line)[1:]


@pytest.mark.parametrize("argv", list(cli_lines()), ids=lambda argv: " ".join(argv[:2]))
def test_cli_examples_use_real_options(argv):
    command = cli.commands.get(argv[0])
    assert command is not None, f"README uses unknown command labelscan {argv[0]}"
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for token in argv[1:]:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"labelscan {argv[0]} has no option {token}"
