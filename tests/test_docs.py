"""The documentation: the MkDocs site builds with ``--strict``, and every command block marked runnable in the README
and the documentation pages runs without an error.

A runnable block is a ```bash fenced block directly after a line ``<!-- runnable -->``. Each of its lines (joined
with the lines a trailing backslash continues; blank and comment lines skipped) runs with bash from the root of a
fresh copy of the repository (the files git tracks or would track), with this interpreter's folder first on PATH,
so the venv that runs the tests runs the commands. The blocks of one page run in order in one copy: a block may set
up what the next one uses. Mark only what takes seconds on two CPU cores, without a GPU or a download.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import tool_env

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
#: how many blocks the pages mark runnable: the extraction must find them all (a renamed marker fails here)
RUNNABLE_BLOCKS = 11
#: the anchors of docs/reference-behaviour.md that the code's docstrings link to (``#ref-6-2`` is section 6.2)
REFERENCE_ANCHORS = ("ref-1", "ref-2", "ref-3", "ref-3-1", "ref-3-2", "ref-3-3", "ref-3-4", "ref-4", "ref-4-1",
                     "ref-4-2", "ref-4-3", "ref-4-4", "ref-5", "ref-5-1", "ref-5-2", "ref-6", "ref-6-1", "ref-6-2",
                     "ref-7", "ref-8", "ref-8-1", "ref-8-2", "ref-8-3", "ref-9", "ref-10", "ref-10-9", "ref-10-10",
                     "ref-11", "ref-12")


def documents() -> list[Path]:
    """The Markdown a user reads: the README, the configuration's README and every page of the site."""
    return [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@dataclass
class Block:
    document: Path
    line: int  # 1-based line of the opening fence
    commands: list[tuple[int, str]]  # (line, command)


def runnable_blocks(path: Path) -> list[Block]:
    """The blocks of ``path`` marked runnable; a marker that is not directly followed by a ```bash fence is an error
    (a marked block that silently never runs would be a check that cannot fail)."""
    lines = path.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        where = f"{_shown(path)}:{i + 1}"
        assert i + 1 < len(lines) and lines[i + 1].strip() == "```bash", f"{where}: {MARKER} is not followed by ```bash"
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{where}: the runnable block is not closed"
        commands, pending, start = [], "", 0
        for j in range(i + 2, end):
            text = lines[j].rstrip()
            if not pending and (not text.strip() or text.lstrip().startswith("#")):
                continue
            start = start if pending else j + 1
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            commands.append((start, pending + text))
            pending = ""
        assert not pending, f"{where}: the last line of the block ends with a backslash"
        assert commands, f"{where}: the runnable block has no command"
        blocks.append(Block(path, i + 2, commands))
    return blocks


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def all_blocks() -> dict[str, list[Block]]:
    found = {}
    for path in documents():
        blocks = runnable_blocks(path)
        if blocks:
            found[str(path.relative_to(REPO))] = blocks
    return found


def copy_of_the_repository(dest: Path) -> Path:
    """The files of a fresh clone (tracked, and untracked ones git does not ignore), copied into ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if not (source.is_file() or source.is_symlink()):  # deleted in the working tree, or a submodule
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


# --- the site ------------------------------------------------------------------------------------------------------


def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link, a missing anchor or page, a docstring mkdocstrings cannot render
    or an include that is not there fails the build; the reference page carries every anchor the code links to."""
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(REPO / "mkdocs.yml"), "--site-dir", str(site)], cwd=REPO, capture_output=True,
                            text=True, env=tool_env(), timeout=600)
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0 and not warnings, f"mkdocs build --strict failed:\n{output[-5000:]}"
    page = (site / "reference-behaviour" / "index.html").read_text()
    missing = [a for a in REFERENCE_ANCHORS if f'id="{a}"' not in page]
    assert not missing, f"docs/reference-behaviour.md lacks the anchors {missing}"
    configuration = (site / "configuration" / "index.html").read_text()
    assert "Top-level settings" in configuration, "docs/configuration.md no longer includes config/README.md"


def test_every_module_is_in_the_architecture_and_the_api_pages():
    """A module added to the package gets its line in docs/architecture.md and its block in its layer's API page."""
    architecture = (REPO / "docs" / "architecture.md").read_text()
    missing = []
    for path in sorted((REPO / "densepure").glob("*/*.py")):
        if path.name == "__init__.py" or path.parent.name.startswith("_"):
            continue
        layer, module = path.parent.name, path.stem
        api = REPO / "docs" / "api" / f"{layer}.md"
        if f"{module}.py" not in architecture:
            missing.append(f"docs/architecture.md: {layer}/{module}.py")
        if not api.is_file() or f"::: densepure.{layer}.{module}\n" not in api.read_text():
            missing.append(f"docs/api/{layer}.md: ::: densepure.{layer}.{module}")
    assert not missing, "modules without documentation:\n" + "\n".join(missing)


def test_the_tests_and_files_the_pages_cite_exist():
    """Every `tests/...` path and every `test_...` function a page names exists, so a claim's evidence cannot be
    renamed away without the page."""
    defined = set()
    for path in (REPO / "tests").rglob("*.py"):
        defined |= {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    stale = []
    for path in documents():
        text = path.read_text()
        for name in re.findall(r"`(test_\w+)`", text):
            if name not in defined:
                stale.append(f"{path.relative_to(REPO)}: no test function {name}")
        for name in re.findall(r"`(tests/[^`{}*\s]+)`", text):
            if not (REPO / name).exists():
                stale.append(f"{path.relative_to(REPO)}: no file {name}")
    assert not stale, "\n".join(stale)


def test_the_readmes_link_to_files_that_exist():
    """The README and config/README.md are read on GitHub, outside the site: their relative links must resolve."""
    broken = []
    for path in (REPO / "README.md", REPO / "config" / "README.md"):
        for link in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if not link.startswith(("http://", "https://", "#", "mailto:")):
                if not (path.parent / link.split("#")[0]).exists():
                    broken.append(f"{path.relative_to(REPO)}: {link}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


# --- the runnable blocks -------------------------------------------------------------------------------------------


def test_the_runnable_blocks_are_found():
    """The extraction finds every block the pages mark (a renamed marker or a broken fence fails here)."""
    found = sum(len(blocks) for blocks in all_blocks().values())
    assert found >= RUNNABLE_BLOCKS, f"found {found} runnable blocks, expected at least {RUNNABLE_BLOCKS}"
    assert "README.md" in all_blocks(), "the README has no runnable block"


def test_the_extraction_reads_what_bash_would(tmp_path):
    """Continuation lines join, comments and blank lines are skipped, a marker without a bash fence is an error."""
    page = tmp_path / "page.md"
    page.write_text(f"text\n{MARKER}\n```bash\n# a comment\necho a \\\n    b\n\necho c  # trailing\n```\n"
                    f"```bash\necho not marked\n```\n")
    (block,) = runnable_blocks(page)
    assert block.commands == [(5, "echo a      b"), (8, "echo c  # trailing")]
    page.write_text(f"{MARKER}\n```yaml\nkey: 1\n```\n")
    with pytest.raises(AssertionError, match="not followed by"):
        runnable_blocks(page)


@pytest.mark.slow
@pytest.mark.parametrize("document", sorted(all_blocks()))
def test_the_runnable_blocks_run(document, tmp_path):
    """Each command of the page's runnable blocks, in order, from one fresh copy of the repository."""
    root = copy_of_the_repository(tmp_path / "repo")
    env = {**tool_env(), "MPLBACKEND": "Agg"}
    for block in all_blocks()[document]:
        for line, command in block.commands:
            result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=root, env=env,
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                pytest.fail(f"{document}:{line}: `{command}` exited with status {result.returncode}\n"
                            f"--- stderr ---\n{result.stderr[-4000:]}\n--- stdout ---\n{result.stdout[-2000:]}")
