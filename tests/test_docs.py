"""The docs' commands run as written: the fenced ``bash`` blocks of the getting-started page and the
recognition walkthrough, in order, from a repository root.

Each page's blocks run as bash scripts (``set -euo pipefail``) in a temporary folder that looks
like the repository root (``configs/``, ``tools/``, ``facetorch/``, ... linked in, and
``../shared`` beside it), so their outputs (``runs/...``) never land in the checkout. The only
changes are the rewrites in :data:`REWRITES`, each with its reason: lines dropped (installing,
running pytest from pytest, a camera) and smaller runs (one epoch, a smaller composed set).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA

DOCS = REPO / "docs"
SHARED = Path(os.environ.get("FACETORCH_SHARED_DATA", SHARED_DATA))

# page -> [(regular expression on one line of a block, replacement or None to drop the line, why)]
REWRITES: dict[str, list[tuple[str, str | None, str]]] = {
    "getting-started.md": [
        (r"^pip install .*$", None, "the test runs in the installed checkout"),
        (r"^pytest\b.*$", None, "the test itself runs under pytest"),
        # one epoch in fp32 instead of 15 in bf16-mixed (a CPU without bf16 instructions runs bf16 several times slower)
        (
            r"(tools/train\.py --config configs/face_vgg\.yaml)$",
            r"\1 --trainer.max_epochs=1 --trainer.precision=32-true",
            "one fp32 epoch",
        ),
    ],
    "recognition.md": [
        (r"--people 20 --orl_people 5 --scenes 20", "--people 3 --orl_people 1 --scenes 2", "a smaller composed set"),
        (r"^.*--source 0 .*$", None, "needs a camera"),
    ],
}
# What each page needs beyond the install; the test skips without it.
NEEDS = {
    "getting-started.md": [],
    "recognition.md": [
        ((SHARED / "lfw_devtrain" / "images").is_dir() and (SHARED / "orl_faces").is_dir(), "../shared/data is absent"),
        (importlib.util.find_spec("face_recognition_models") is not None, "face_recognition_models (the dlib extra) is absent"),
    ],
}
# Linked into the temporary repository root.
REPO_ENTRIES = ("configs", "tools", "facetorch", "tests", "setup.cfg", "pyproject.toml")

BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def bash_blocks(page: str) -> list[str]:
    """The fenced ``bash`` blocks of ``docs/<page>``, in order."""
    return BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


def rewrite(page: str, block: str, used: set[int] | None = None) -> str:
    """``block`` with the page's rewrites applied line by line (``used`` collects the rules that matched)."""
    lines = []
    for line in block.splitlines():
        for index, (pattern, replacement, _why) in enumerate(REWRITES[page]):
            if re.search(pattern, line):
                if used is not None:
                    used.add(index)
                if replacement is None:
                    line = None
                    break
                line = re.sub(pattern, replacement, line)
        if line is not None:
            lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("page", sorted(REWRITES))
def test_every_rewrite_matches_a_line_of_its_page(page: str) -> None:
    """A rule that no longer matches anything would hide a changed command: keep the table honest."""
    used: set[int] = set()
    blocks = bash_blocks(page)
    assert blocks, f"docs/{page} has no ```bash block"
    for block in blocks:
        rewrite(page, block, used)
    stale = [REWRITES[page][i][0] for i in range(len(REWRITES[page])) if i not in used]
    assert not stale, f"rewrites of docs/{page} that match no line: {stale}"


def repository_root(tmp_path: Path) -> Path:
    """A folder that looks like the repository root, with ``../shared`` beside it."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in REPO_ENTRIES:
        (root / name).symlink_to(REPO / name)
    if SHARED.is_dir():
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(SHARED)
    return root


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 1 minute a page on an idle 2-core machine; shared machines run several times slower
@pytest.mark.parametrize("page", sorted(REWRITES))
def test_the_commands_of_the_page_run_as_written(page: str, tmp_path: Path) -> None:
    for ok, reason in NEEDS[page]:
        if not ok:
            pytest.skip(reason)
    root = repository_root(tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout's facetorch
    # `python` and the `facetorch` console script of this interpreter
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "2")
    for number, block in enumerate(bash_blocks(page), start=1):
        script = rewrite(page, block)
        if not script.strip():
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (
            f"docs/{page}, bash block {number} failed with exit code {done.returncode}:\n{script}\n"
            f"stdout (end):\n{done.stdout[-2000:]}\nstderr (end):\n{done.stderr[-3000:]}"
        )
