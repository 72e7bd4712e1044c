"""What every facetorch command line shares: the common flags, and how a tool ends on bad input.

- ``--ckpt_path`` names a checkpoint, ``--output`` what the tool writes, ``--overwrite`` (a plain
  flag) allows replacing an existing, non-empty output, ``--quiet`` hides progress bars; flags
  are spelled with underscores. Old spellings (``--ckpt``, ``--data-root``, ...) still work for
  now, with a note on stderr.
- Bad input ends the tool with one line on stderr, ``<tool>: error: <what, where, what to do>``,
  and exit code 2; ``FACETORCH_DEBUG=1`` shows the traceback instead. Argument errors of
  argparse, jsonargparse and Lightning keep their own format.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

__all__ = [
    "DEBUG_ENV",
    "INPUT_ERRORS",
    "add_ckpt_path",
    "add_output",
    "add_quiet",
    "rename_legacy_flags",
    "run_tool",
    "tool_parser",
]

DEBUG_ENV = "FACETORCH_DEBUG"

# Errors that mean "the input is wrong": facetorch raises these with a message that names the
# path or key and what to do. Anything else is a bug and keeps its traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)


def tool_parser(prog: str, doc: Optional[str]) -> argparse.ArgumentParser:
    """An argparse parser whose help shows the module docstring (its examples) as written."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_ckpt_path(parser: Any, help: str, required: bool = True) -> None:
    """``--ckpt_path CKPT``: the checkpoint the tool reads."""
    parser.add_argument("--ckpt_path", required=required, default=None, metavar="CKPT", help=help)


def add_output(parser: Any, help: str, required: bool = True, default: Optional[str] = None, overwrite_help: str = "") -> None:
    """``--output PATH`` and ``--overwrite``: where the tool writes, and whether it may replace what is there."""
    parser.add_argument("--output", required=required, default=default, metavar="PATH", help=help)
    parser.add_argument(
        "--overwrite", action="store_true",
        help=overwrite_help or "replace an existing, non-empty --output (without it, the tool refuses before any work)",
    )  # fmt: skip


def add_quiet(parser: Any) -> None:
    """``--quiet``: no progress bars (they are also off when stderr is not a terminal)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def rename_legacy_flags(argv: Sequence[str], renamed: Mapping[str, str], prog: str) -> list[str]:
    """``argv`` with old flag spellings replaced by the current ones, each noted once on stderr.

    Args:
        argv: The arguments as given.
        renamed: Old spelling -> new spelling (``{"--ckpt": "--ckpt_path"}``).
        prog: The tool's name, for the note.
    """
    out: list[str] = []
    for arg in argv:
        flag, sep, value = arg.partition("=")
        if flag in renamed:
            print(f"{prog}: note: {flag} is now {renamed[flag]}", file=sys.stderr)
            arg = f"{renamed[flag]}{sep}{value}"
        out.append(arg)
    return out


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"  # e.g. a permission error raised by the OS itself
    else:
        text = str(error)
    return " ".join(text.split()) or type(error).__name__


def run_tool(prog: str, main: Callable[[Optional[list[str]]], Any], argv: Optional[list[str]] = None) -> int:
    """Run a tool's ``main(argv)`` and turn input errors into one line on stderr.

    Returns:
        The exit code: 0 on success, 2 on an input error, 130 on Ctrl-C.
    """
    try:
        main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except INPUT_ERRORS as error:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0
