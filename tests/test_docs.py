"""Docs that stay true (issue 31): every nmt-* command line in README.md and docs/*.md is
checked against the command-line parser and the schemas without running it, the files
they name exist, the Python API page's examples run, and the README stays a front door.

The rule for lines that cannot be checked whole: a value that is a placeholder is not
checked (its key still is). A placeholder is a value holding a word in capitals of two
letters or more or one of N, K (RUN, RUN_DIR, CKPT, FILE, SRC), ``...``, a shell variable
(``$X``) or a brace (``{a,b}``). A value that names a file of the repository (it starts
with data/, conf/, docs/, scripts/ or tests/) must exist.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from omegaconf.errors import MissingMandatoryValue

from nmt.commands.app import ADDED_GROUPS, SCHEMAS, override_problem, setting_problem
from nmt.commands.command_line import HYDRA_OPTIONS, INFO_CHOICES, _annotation, spelling_problem
from nmt.config import CONF_DIR, check_ranges
from tests.conftest import compose_config

ROOT = CONF_DIR.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = {name.removesuffix("_schema"): schema for name, schema in SCHEMAS.items()}
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]+\b|\b[NK]\b|\.\.\.|\$|[{}<]")
REPO_PATH = re.compile(r"^(data|conf|docs|scripts|tests)/")
SHELL_END = re.compile(r"\s(\||>|<|2>|&&|;|#)(\s|$)|`")


def code_lines(text: str) -> list[str]:
    """The lines of the page's code: fenced and indented blocks (continuations joined), and
    inline code spans."""
    found, block, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if (fenced or line.startswith("    ")) and line.strip().startswith("#"):
            continue  # a comment line in a shell block
        if fenced or line.startswith("    "):
            block.append(line.strip())
            if not block[-1].endswith("\\"):
                found.append(" ".join(part.rstrip("\\").strip() for part in block))
                block = []
        else:
            found += re.findall(r"`([^`]*nmt-[a-z]+[^`]*)`", line)
    return found


def command_lines() -> list[tuple[str, str, list[str]]]:
    """(page, command, arguments) of every nmt-* command line of the pages."""
    found = []
    for page in PAGES:
        for line in code_lines(page.read_text(encoding="utf-8")):
            for match in re.finditer(r"(?:^|[\s(|;&])nmt-([a-z]+)(?=\s|$)", line):
                if match.group(1) not in COMMANDS:
                    continue
                rest = line[match.end() :]
                end = SHELL_END.search(rest)
                try:
                    args = shlex.split(rest[: end.start()] if end else rest)
                except ValueError:  # an unbalanced quote in prose
                    continue
                found.append((page.relative_to(ROOT).as_posix(), match.group(1), args))
    return found


LINES = command_lines()


def test_the_pages_hold_command_lines_of_every_command():
    assert len(LINES) > 80
    assert {command for _, command, _ in LINES} == set(COMMANDS)


@pytest.mark.parametrize("page, command, args", LINES, ids=[f"{p}:{c}:{' '.join(a)[:60]}" for p, c, a in LINES])
def test_a_documented_command_line_fits_the_parser(page, command, args):
    schema = COMMANDS[command]
    assert spelling_problem(args, schema, f"nmt-{command}") is None
    multirun = any(arg in ("-m", "--multirun") for arg in args)
    whole = not any(arg.startswith("-") or arg == "..." for arg in args)  # composed and range-checked below
    values = {args[i + 1] for i, arg in enumerate(args[:-1]) if arg in HYDRA_OPTIONS or args[i + 1] in INFO_CHOICES}
    for i, arg in enumerate(args):
        if arg.startswith("-") or arg == "..." or (arg in values and i and args[i - 1].startswith("-")):
            continue
        assert "=" in arg, f"{page}: nmt-{command} ... {arg}: an argument that is no key=value"
        key, value = arg.lstrip("+~").split("=", 1)
        if PLACEHOLDER.search(value):
            known = _annotation(key, schema) is not None or key in ADDED_GROUPS or key.startswith("hydra")
            assert known, f"{page}: nmt-{command} {arg}: {key} is not a setting"
            whole = False
            continue
        assert override_problem(arg, schema, multirun) is None, f"{page}: nmt-{command} {arg}"
        assert setting_problem(key, value, schema) is None, f"{page}: nmt-{command} {arg}"
        for part in re.split(r"[\[\],]", value):
            if REPO_PATH.match(part):
                assert (ROOT / part).exists(), f"{page}: nmt-{command} {arg}: {part} is not in the repository"
    if whole:  # every value is real: Hydra composes it, and every number is in its range
        check_ranges(composed(command, [arg for arg in args if not arg.startswith("hydra.")]))


def composed(command: str, overrides: list[str]):
    """The command's settings as Hydra composes them; a required setting the line leaves out
    (an inline mention such as `nmt-score < pairs.tsv`) is filled with a stand-in."""
    for _ in range(3):
        try:
            return compose_config(command, overrides)
        except MissingMandatoryValue as err:
            overrides = [*overrides, f"{err.full_key}=x"]
    return compose_config(command, overrides)


def test_the_files_and_scripts_the_pages_link_exist():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (page.parent / target).exists(), f"{page.name} links {target}, which does not exist"
        for script in re.findall(r"(?:bash|python)\s+(scripts/[\w./-]+)", text):
            assert (ROOT / script).exists(), f"{page.name} runs {script}, which does not exist"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not lead to docs/{page.name}"


def python_examples() -> list[str]:
    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.skipif(not (ROOT / "data" / "models" / "bible-es-en" / "config.json").exists(), reason="no shipped model")
@pytest.mark.parametrize("number", range(len(python_examples())))
def test_the_python_api_page_s_examples_run(number):
    code = python_examples()[number]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
