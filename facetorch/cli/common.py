"""What every facetorch command line shares: the common flags, number types, and how a tool ends.

- ``--ckpt_path`` names a checkpoint, ``--output`` what the tool writes, ``--overwrite`` (a plain
  flag) allows replacing an existing, non-empty output (never an input), ``--quiet`` hides
  progress bars; flags are spelled with underscores, and only in full (no prefixes). A flag that
  is not there (an old spelling such as ``--ckpt``) is an argument error that names the flag
  meant.
- Numeric flags take the argparse types below (:func:`positive_int`, :data:`fraction`,
  :data:`cosine`, ...), built on :mod:`facetorch.ranges`: a value outside its meaning is an
  argument error that gives the allowed range.
- Bad input ends the tool with one line on stderr, ``<tool>: error: <what, where, what to do>``,
  and exit code 2; ``FACETORCH_DEBUG=1`` shows the traceback instead. Argument errors of
  argparse, jsonargparse and Lightning keep their own format. Notices of the library
  (:func:`facetorch.io.notice`: what was skipped and why) are printed as ``<tool>: <notice>``.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

from facetorch import io, ranges

__all__ = [
    "DEBUG_ENV",
    "FacetorchParsing",
    "INPUT_ERRORS",
    "LIGHTNING_INPUT_ERRORS",
    "THIRD_PARTY_NOISE",
    "ToolParser",
    "add_ckpt_path",
    "add_output",
    "add_quiet",
    "check_config_files",
    "config_files",
    "cosine",
    "flag_hint",
    "fraction",
    "image_side",
    "is_input_error",
    "nonnegative_float",
    "nonnegative_int",
    "number_type",
    "open_fraction",
    "plain_text",
    "port",
    "positive_float",
    "positive_fraction",
    "positive_int",
    "positive_int_list",
    "probability",
    "quiet_third_party",
    "run_tool",
    "tool_parser",
    "upsample",
]

DEBUG_ENV = "FACETORCH_DEBUG"

# Errors that mean "the input is wrong": facetorch raises these with a message that names the
# path or key and what to do. Anything else is a bug and keeps its traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)
# Lightning's own "this trainer option is out of its range" (trainer.max_epochs=-5, devices=0), by name:
# importing Lightning here would slow down every tool that does not use it.
LIGHTNING_INPUT_ERRORS = ("MisconfigurationException",)


def is_input_error(error: BaseException) -> bool:
    """Whether ``error`` means the input is wrong (one line, exit code 2) rather than a bug (a traceback)."""
    return isinstance(error, INPUT_ERRORS) or any(c.__name__ in LIGHTNING_INPUT_ERRORS for c in type(error).__mro__)

# ----------------------------------------------------------------------------------------------
# Help text and argument errors
# ----------------------------------------------------------------------------------------------

_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"`([^`]+)`")


def plain_text(text: str) -> str:
    """Docstring text without reStructuredText markup, as ``--help`` shows it.

    ``:func:`~a.b``` -> ``b``, ````x```` -> ``x``, ```x``` -> ``x``, and a literal-block ``::`` -> ``:``.
    """
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    return re.sub(r"(\w)::(\s)", r"\1:\2", text)


def _flags_given(args: Iterable[str]) -> Iterator[str]:
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            yield arg.partition("=")[0].rstrip("+")  # --trainer.callbacks+=...


def flag_hint(given: Iterable[str], known: Iterable[str]) -> str:
    """`` (--ckpt is not a flag; did you mean --ckpt_path?)`` for each given flag that is not known, or ``""``.

    The flag meant is the known one spelled with underscores (``--max-frames``), the one the given
    flag begins (``--ckpt``), else the closest spelling.
    """
    known = sorted(set(known))
    notes = []
    for flag in dict.fromkeys(_flags_given(given)):
        if flag in known:
            continue
        underscored = "--" + flag[2:].replace("-", "_")
        matches = [underscored] if underscored in known else [k for k in known if k.startswith(flag)][:3]
        matches = matches or difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        if matches:
            notes.append(f"{flag} is not a flag of this tool; did you mean {' or '.join(matches)}?")
    return f" ({'; '.join(notes)})" if notes else ""


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` of ``parser`` and of its subcommands (argparse and jsonargparse alike)."""
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):  # jsonargparse's subcommands are one too
            for sub in action.choices.values():
                flags |= parser_flags(sub)
    return flags


class FacetorchParsing:
    """What every facetorch parser adds to argparse (or jsonargparse, which extends it); a mixin.

    Flags only in full (``allow_abbrev=False``: ``--ckpt`` is not ``--ckpt_path``), help text
    without reStructuredText markup, and an argument error that names the flag meant when a given
    flag does not exist (an old spelling, a typo). ``self.args`` holds the arguments being parsed
    (jsonargparse keeps them there itself).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.args: list[str] = []

    def format_help(self, *args: Any, **kwargs: Any) -> str:  # noqa: D102
        return plain_text(super().format_help(*args, **kwargs))  # type: ignore[misc]

    def error(self, message: str, *rest: Any) -> Any:  # noqa: D102
        super().error(message + flag_hint(getattr(self, "args", None) or [], parser_flags(self)), *rest)  # type: ignore[misc]


class ToolParser(FacetorchParsing, argparse.ArgumentParser):
    """argparse as every facetorch tool uses it (see :class:`FacetorchParsing`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace: Any = None) -> Any:  # noqa: D102
        self.args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)


_COMMAND: list[str] = []  # "facetorch gallery" while `facetorch gallery` runs: the name usage and messages give


@contextmanager
def running_as(command: str) -> Iterator[None]:
    """Inside the block, tools call themselves ``command`` (``facetorch gallery``) instead of their script's name."""
    _COMMAND.append(command)
    try:
        yield
    finally:
        _COMMAND.pop()


def shown_prog(prog: str) -> str:
    """The name a tool gives itself: ``prog`` (``gallery.py``), or the ``facetorch`` command that runs it."""
    return _COMMAND[-1] if _COMMAND else prog


TTA_FLIP_CHOICES = ("checkpoint", "on", "off")  # --tta_flip of the tools that run a detector or an embedding


def tta_flip_choice(choice: str) -> Optional[bool]:
    """``--tta_flip``: ``None`` to keep the checkpoint's setting (``checkpoint``), else ``on`` -> True, ``off`` -> False."""
    return None if choice == "checkpoint" else choice == "on"


def tool_parser(prog: str, doc: Optional[str]) -> ToolParser:
    """A :class:`ToolParser` whose help shows the module docstring (its examples) as written."""
    return ToolParser(prog=shown_prog(prog), description=doc)


def config_files(argv: Sequence[str]) -> list[str]:
    """The files given as ``--config FILE`` (or ``-c FILE``, ``--config=FILE``) in ``argv``, as given."""
    files = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--config", "-c"):
            path = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if path and os.path.isfile(path):
                files.append(path)
    return files


def check_config_files(argv: Sequence[str]) -> None:
    """Refuse a ``--config`` file that is not a mapping of sections, naming it (see :func:`facetorch.io.read_config`)."""
    for path in config_files(argv):
        io.read_config(path)


# ----------------------------------------------------------------------------------------------
# Number types: one per kind of number (facetorch.ranges), the allowed range in the error
# ----------------------------------------------------------------------------------------------


def number_type(kind: ranges.Kind, name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that reads a number of ``kind`` and refuses any other with its range.

    Args:
        kind: What the number may be.
        name: The type's name (argparse shows it in some messages).
    """

    def parse(text: str) -> Any:
        try:
            value: Any = int(text) if kind.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.describe()}, got {text!r}") from None
        if not kind.contains(value):
            raise argparse.ArgumentTypeError(f"expected {kind.describe()}, got {text}")
        return value

    parse.__name__ = name
    parse.kind = kind  # type: ignore[attr-defined]  (what the parsers' property test checks a parsed value against)
    return parse


positive_int = number_type(ranges.POSITIVE_INT, "positive_int")
nonnegative_int = number_type(ranges.NONNEGATIVE_INT, "nonnegative_int")
positive_float = number_type(ranges.POSITIVE, "positive_float")
nonnegative_float = number_type(ranges.NONNEGATIVE, "nonnegative_float")
fraction = number_type(ranges.FRACTION, "fraction")
positive_fraction = number_type(ranges.POSITIVE_FRACTION, "positive_fraction")
open_fraction = number_type(ranges.OPEN_FRACTION, "open_fraction")
probability = number_type(ranges.PROBABILITY, "probability")
cosine = number_type(ranges.COSINE, "cosine")
image_side = number_type(ranges.IMAGE_SIDE, "image_side")
# dlib_cnn's doublings of an image: each one quadruples the pixels (4: 256 times the memory).
upsample = number_type(ranges.Kind("times an image is doubled", low=0, high=4, integer=True), "upsample")
port = number_type(ranges.Kind("a TCP port", low=1, high=65535, integer=True), "port")


def positive_int_list(text: str) -> list[int]:
    """An argparse ``type=``: comma-separated counts or sizes (``1,64``), each an integer >= 1."""
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 (e.g. 1,64), got {text!r}")
    return [positive_int(part) for part in parts]


positive_int_list.kind = ranges.POSITIVE_INT  # type: ignore[attr-defined]  (of each item)


# ----------------------------------------------------------------------------------------------
# Common flags
# ----------------------------------------------------------------------------------------------


def add_ckpt_path(parser: Any, help: str, required: bool = True) -> None:
    """``--ckpt_path CKPT``: the checkpoint the tool reads."""
    parser.add_argument("--ckpt_path", required=required, default=None, metavar="CKPT", help=help)


def add_output(parser: Any, help: str, required: bool = True, default: Optional[str] = None, overwrite_help: str = "") -> None:
    """``--output PATH`` and ``--overwrite``: where the tool writes, and whether it may replace what is there."""
    parser.add_argument("--output", required=required, default=default, metavar="PATH", help=help)
    parser.add_argument(
        "--overwrite", action="store_true",
        help=overwrite_help or "replace an existing, non-empty --output (never an input; without it, the tool refuses "
                               "before any work)",
    )  # fmt: skip


def add_quiet(parser: Any) -> None:
    """``--quiet``: no progress bars (they are also off when stderr is not a terminal)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


# ----------------------------------------------------------------------------------------------
# The console: third-party noise filtered, facetorch's notices shown, errors as one line
# ----------------------------------------------------------------------------------------------

# Third-party warnings that tell a facetorch user nothing they can act on, by message and the
# module that warns (never all warnings: a new one should still be seen).
THIRD_PARTY_NOISE: tuple[tuple[str, str], ...] = (
    # facetorch passes sys.argv on as args itself (to translate 0.1.0 configs): nothing to prevent.
    (r"LightningCLI's args parameter is intended to run from within Python", r"pytorch_lightning\.cli"),
    # Lightning's own use of a torch API that torch deprecated; nothing a user can change.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\.utilities\._pytree"),
    # The summary's size estimate in bf16: the table is printed anyway.
    (r"Precision .* is not supported by the model summary", r"pytorch_lightning\.utilities\.model_summary"),
)
# Lightning's advertisement for its cloud logger, logged (not warned) when a run sets up its loggers.
_ADVERTISEMENTS = ("💡 Tip: For seamless cloud logging",)
_LIGHTNING_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero")


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ADVERTISEMENTS)


def quiet_third_party() -> None:
    """Hide the named third-party warnings (:data:`THIRD_PARTY_NOISE`) and Lightning's logger advertisement."""
    for message, module in THIRD_PARTY_NOISE:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name in _LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvertisements) for f in logger.filters):
            logger.addFilter(_DropAdvertisements())


@contextmanager
def _notices_on_stderr(prog: str) -> Iterator[None]:
    """Print :func:`facetorch.io.notice` lines as ``<prog>: <notice>`` on stderr while the tool runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    logger, propagate = io.LOG, io.LOG.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"  # e.g. a permission error raised by the OS itself
    else:
        text = str(error)
    return " ".join(text.split()) or type(error).__name__


def run_tool(prog: str, main: Callable[[Optional[list[str]]], Any], argv: Optional[list[str]] = None) -> int:
    """Run a tool's ``main(argv)``: third-party noise off, notices on stderr, input errors as one line.

    Returns:
        The exit code: 0 on success, 2 on an input error, 130 on Ctrl-C.
    """
    quiet_third_party()
    prog = shown_prog(prog)
    try:
        with _notices_on_stderr(prog):
            main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not is_input_error(error) or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0
