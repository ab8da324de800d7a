"""The README stays a short front page, and what README and docs/ name (pages, anchors, commands, flags, paths,
modules) exists."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from cnnkit.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP_LINES = (
    "pip install torch==2.13.0 && pip install -e . && cnnkit train",
    'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest',
)
MAX_README_LINES = 160
FIRST_SCREEN_LINES = 25
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
COMMAND = re.compile(r"(?<![\w./-])cnnkit ([a-z][a-z-]*)((?: [^#&|;]*)?)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
REPO_PATH = re.compile(r"^(?:src|tests|benchmarks|docs|\.ci)/[\w./-]*$")
DOTTED = re.compile(r"^(cnnkit(?:\.\w+)+)")
CURRENT = [page for page in PAGES if page.name != "CHANGELOG.md"]  # the changelog names old paths on purpose


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The CLI's subcommands and their parsers, from the parser `cnnkit` itself runs."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("cnnkit's parser has no subcommands")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (headings inside code blocks excluded)."""
    text = FENCE.sub("", page.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def shell_snippets(page: Path) -> list[str]:
    """Command lines in the page's shell code blocks (continuations joined) and its inline code spans."""
    text = page.read_text()
    snippets = []
    for language, body in FENCE.findall(text):
        if language in ("", "bash", "sh", "shell", "console"):
            snippets += [line.split(" #")[0] for line in body.replace("\\\n", " ").splitlines()]
    prose = FENCE.sub("", text)
    return snippets + INLINE.findall(prose)


def named_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(subcommand, flags) for each `cnnkit SUBCOMMAND ...` the page shows as a command."""
    found = []
    for snippet in shell_snippets(page):
        for name, rest in COMMAND.findall(snippet):
            found.append((name, FLAG.findall(rest)))
    return found


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it to {MAX_README_LINES}"


@pytest.mark.parametrize("line", SETUP_LINES)
def test_setup_line_on_first_screen(line):
    first = [text.strip() for text in README.read_text().splitlines()[:FIRST_SCREEN_LINES]]
    assert line in first, f"README's first {FIRST_SCREEN_LINES} lines lack the set-up command {line!r}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert SETUP_LINES[1] in [line.strip() for line in ci]


def test_readme_links_every_docs_page():
    linked = {target.split("#")[0] for target in LINK.findall(README.read_text())}
    for page in ("training", "layers", "models", "inspect", "explore", "interop", "security", "performance"):
        assert f"docs/{page}.md" in linked, f"README does not link docs/{page}.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_links_point_to_existing_files_and_headings(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # an external address: not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links {target}: {path} does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name} links {target}: {file.name} has no heading #{anchor}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_named_commands_and_flags_exist(page):
    parsers = subcommands()
    for name, flags in named_commands(page):
        assert name in parsers, f"{page.name} names `cnnkit {name}`, not a subcommand of {sorted(parsers)}"
        known = {flag for action in parsers[name]._actions for flag in action.option_strings}  # builds lazy flags
        unknown = [flag for flag in flags if flag not in known]
        assert not unknown, f"{page.name}: `cnnkit {name}` has no option {', '.join(unknown)}"


def resolve(dotted: str) -> object:
    """The module, or the attribute of its longest importable module prefix, that a dotted name means."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("page", CURRENT, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_named_paths_and_modules_exist(page):
    spans = INLINE.findall(FENCE.sub("", page.read_text()))
    for span in spans:
        if REPO_PATH.match(span):
            assert (ROOT / span).exists(), f"{page.name} names {span}, which does not exist"
        elif match := DOTTED.match(span):
            try:
                resolve(match.group(1))
            except (ImportError, AttributeError) as error:
                raise AssertionError(f"{page.name} names {match.group(1)}: {error}") from None


def test_the_command_finder_sees_commands():
    """The checks above are only as good as the finder: it must see README's commands, and not prose or Python."""
    names = [name for name, _ in named_commands(README)]
    assert {"train", "evaluate", "explore"} <= set(names)
    assert ("train", ["--model"]) in named_commands(README)
    assert "implements" not in names and "import" not in names
