"""The README cannot drift: its study files parse, its command table lists every option, its
Python names exist."""

import ast
import re
from pathlib import Path

import pytest
import typer

import mnist_study
from mnist_study.cli import app
from mnist_study.studies import parse_study

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("text", blocks("toml"))
def test_every_toml_block_is_a_valid_study(text, tmp_path):
    study = parse_study(text, "README block", tmp_path)
    assert study.experiments


def test_the_command_table_lists_every_option_of_every_command():
    group = typer.main.get_command(app)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `mnist-study (\w+).*$", README, re.M)}
    assert set(rows) == set(group.commands), "every command has a row, and every row a command"
    for name, command in group.commands.items():
        params = [param for param in command.params if param.param_type_name == "option"]
        options = {opt for param in params for opt in param.opts if opt.startswith("--") and opt != "--help"}
        negations = {opt for param in params for opt in param.secondary_opts}  # --no-report of --report/--no-report
        for option in options:
            assert option in rows[name], f"`mnist-study {name}` row lacks {option}"
        for option in set(re.findall(r"(--[a-z][a-z-]+)", rows[name])) - negations:
            assert option in options, f"`mnist-study {name}` has no option {option}"


@pytest.mark.parametrize("code", blocks("python"))
def test_python_blocks_import_names_that_exist(code):
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module == "mnist_study":
            for alias in node.names:
                assert alias.name in dir(mnist_study)
