"""``facetorch <command>``: one command line for every tool.

Each command is a module of :mod:`facetorch.cli` with a ``main(argv)`` that ends the process
(one line on stderr and exit code 2 on bad input). The table :data:`COMMANDS` is the one place
that names them: the console script, ``facetorch --help`` and the docs' command-line reference
read it. A command's module is imported only when that command runs, so ``facetorch --help``
stays fast.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Optional

__all__ = ["COMMANDS", "Command", "main"]


@dataclass(frozen=True)
class Command:
    """One ``facetorch`` command.

    Attributes:
        target: ``module:function`` taking ``argv`` (a list of strings, or None for ``sys.argv``).
        help: One line for ``facetorch --help``.
        prefix: Arguments put before the user's (``recognize`` is ``gallery recognize``).
        tool: The ``tools/*.py`` shim that runs the same code, if any.
    """

    target: str
    help: str
    prefix: tuple[str, ...] = ()
    tool: Optional[str] = None


_LIGHTNING = "facetorch.cli.lightning:lightning_main"

COMMANDS: dict[str, Command] = {
    "train": Command("facetorch.cli.lightning:train_main", "fit a task from a config, then test its best checkpoint",
                     tool="train.py"),  # fmt: skip
    "evaluate": Command("facetorch.cli.lightning:evaluate_main", "evaluate a checkpoint on any folder of the task's layout",
                        tool="evaluate.py"),  # fmt: skip
    "fit": Command(_LIGHTNING, "Lightning CLI: fit", prefix=("fit",)),
    "validate": Command(_LIGHTNING, "Lightning CLI: validate", prefix=("validate",)),
    "test": Command(_LIGHTNING, "Lightning CLI: test", prefix=("test",)),
    "predict": Command(_LIGHTNING, "Lightning CLI: predict", prefix=("predict",)),
    "explain": Command("facetorch.cli.explain:main", "Grad-CAM, Guided Backprop and Guided Grad-CAM pictures of a checkpoint",
                       tool="explain.py"),  # fmt: skip
    "export": Command("facetorch.cli.export:main", "export a checkpoint or config to ONNX or TorchScript", tool="export.py"),
    "gallery": Command("facetorch.cli.gallery:main", "enroll people, recognize, identify, verify, score (all subcommands)",
                       tool="gallery.py"),  # fmt: skip
    "recognize": Command("facetorch.cli.gallery:main", "name every face in photos, a video or a camera (gallery recognize)",
                         prefix=("recognize",)),  # fmt: skip
    "cluster": Command("facetorch.cli.gallery:main", "group the faces of a photo collection by person (gallery cluster)",
                       prefix=("cluster",)),  # fmt: skip
    "detect": Command("facetorch.cli.detect:main", "run a single-face detector checkpoint on images, a video or a camera",
                      tool="detect.py"),  # fmt: skip
    "prepare-crops": Command("facetorch.cli.prepare_crops:main", "cut face / non-face crops from annotated photos",
                             tool="prepare_crops.py"),  # fmt: skip
    "prepare-boxes": Command("facetorch.cli.prepare_boxes:main", "pseudo-label face boxes with dlib's CNN detector as a teacher",
                             tool="prepare_boxes.py"),  # fmt: skip
    "prepare-shards": Command("facetorch.cli.prepare_shards:main", "write a data folder as streaming shards",
                              tool="prepare_shards.py"),  # fmt: skip
    "baselines": Command("facetorch.cli.baselines:main", "classical baselines (Haar, HOG + SVM, eigenfaces, LBP)",
                         tool="baselines.py"),  # fmt: skip
    "benchmark": Command("facetorch.cli.benchmark:main", "measure throughput against a baseline in the same process",
                         tool="benchmark.py"),  # fmt: skip
    "serve": Command("facetorch.cli.serve:main", "recognition as an HTTP service with a web page (FastAPI)", tool="serve.py"),
    "synthetic-faces": Command("facetorch.cli.synthetic_faces:main", "write a small generated data set of any layout",
                               tool="synthetic_faces.py"),  # fmt: skip
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: facetorch <command> [options]   (facetorch <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> None:
    """Run ``facetorch <name> argv...`` (ends the process like the tool does)."""
    from facetorch.cli.common import running_as

    command = COMMANDS[name]
    module_name, function = command.target.split(":")
    entry = getattr(importlib.import_module(module_name), function)
    # `facetorch recognize` is `facetorch gallery recognize`: the tool's own command names it
    owner = next((other for other, c in COMMANDS.items() if c.target == command.target and not c.prefix), name)
    with running_as(f"facetorch {owner}"):
        entry([*command.prefix, *argv])


def main(argv: Optional[list[str]] = None) -> None:
    """The ``facetorch`` console script: ``facetorch <command> [options]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        import facetorch

        print(f"facetorch {facetorch.__version__}")
        sys.exit(0)
    name = argv[0]
    if name not in COMMANDS:
        print(f"facetorch: error: unknown command {name!r}; the commands are: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    run_command(name, argv[1:])

if __name__ == "__main__":
    main()
