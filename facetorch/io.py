"""Files and the console: atomic writes, the output checks every tool makes first, progress bars.

With atomic writes a reader never sees a half-written file, and a crash never corrupts an old one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Optional, TypeVar

import numpy as np

T = TypeVar("T")

# Notices for the person running a tool (something skipped, ignored, or worth knowing), one line each
# on stderr: facetorch.cli.common.run_tool prints them as "<tool>: <message>".
LOG = logging.getLogger("facetorch")


def notice(message: str) -> None:
    """Tell the person running the tool something in one line on stderr (not a Python warning).

    Args:
        message: One line: what was skipped, ignored or changed, and why.
    """
    LOG.warning(" ".join(message.split()))


def first_few(items: Sequence[Any], count: int = 5) -> str:
    """``a, b, c, ...``: the first ``count`` items of a list, for a message that names what it counts."""
    shown = ", ".join(str(item) for item in items[:count])
    return shown + (", ..." if len(items) > count else "")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step.

    Args:
        path: The final file path. Its folder is created if missing.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        **kwargs: Passed to :func:`open` (e.g. ``encoding``, ``newline``).

    Yields:
        The open temporary file. If the block raises, the temporary file is removed and ``path``
        is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so os.replace is a rename on one file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus the umask).
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def json_safe(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by ``None``: JSON has no NaN, so ``null``."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    if isinstance(data, np.generic):
        return json_safe(data.item())
    return data


def json_line(data: Any) -> str:
    """``data`` as one line of strict JSON (NaN as ``null``), for the last line a tool prints."""
    return json.dumps(json_safe(data), allow_nan=False)


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Atomically write ``data`` as indented, strict JSON (keys in insertion order; NaN as ``null``)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(json_safe(data), handle, indent=2, allow_nan=False)
        handle.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Atomically save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_open(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(figure)


def write_csv(path: str | os.PathLike, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Atomically write ``rows`` (dicts keyed by ``fieldnames``) as a CSV file with a header."""
    import csv

    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames), restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_png(path: str | os.PathLike, picture: np.ndarray) -> None:
    """Atomically write a uint8 picture, (H, W), (H, W, 1) or (H, W, 3) RGB, as PNG."""
    from PIL import Image

    picture = np.asarray(picture)
    if picture.ndim == 3 and picture.shape[2] == 1:
        picture = picture[..., 0]
    if picture.dtype != np.uint8:
        raise TypeError(f"Expected a uint8 picture for {str(path)!r}, got dtype {picture.dtype}")
    with atomic_open(path, "wb") as handle:
        Image.fromarray(picture).save(handle, format="PNG")


# ----------------------------------------------------------------------------------------------
# Output checks: made before any slow step, so a bad --output fails at once and names itself
# ----------------------------------------------------------------------------------------------


def _input_paths(value: Any) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (list, tuple, set)):
        return [text for item in value for text in _input_paths(item)]
    text = str(value)
    if not text or "://" in text or (text.isdigit() and not Path(text).exists()):  # a URL or a camera index
        return []
    return [text]


def check_not_an_input(output: str | os.PathLike, inputs: Mapping[str, Any], flag: str = "--output") -> None:
    """Refuse an output that is one of the tool's inputs, or a folder that holds one.

    ``--overwrite`` allows replacing an earlier output, never what the tool reads: a checkpoint, a
    config, a data folder, a gallery or a video being read.

    Args:
        output: What the tool will write (a file or a folder).
        inputs: The flag that named each input -> its path (or a list of paths; ``None``, URLs and
            camera indices are passed over).
        flag: The option that named the output.

    Raises:
        ValueError: ``output`` is an input, or holds one; the message names both.
    """
    target = Path(output).resolve()
    for name, value in inputs.items():
        for text in _input_paths(value):
            source = Path(text).resolve()
            same = source == target or (source.exists() and target.exists() and os.path.samefile(source, target))
            if same:
                raise ValueError(f"{flag} {str(output)!r} is the input {name} {text!r}: the tool would replace what it "
                                 f"reads (--overwrite never replaces an input); choose another {flag}")  # fmt: skip
            if target in source.parents:
                raise ValueError(f"{flag} {str(output)!r} holds the input {name} {text!r}: writing there could replace it "
                                 f"(--overwrite never replaces an input); choose a {flag} outside it")  # fmt: skip


def _check_writable(path: Path, flag: str) -> None:
    """Refuse a path whose nearest existing folder cannot be written to."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"{flag} {str(path)!r}: {str(folder)!r} is a file, so nothing can be created under it")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {str(path)!r}: the folder {str(folder)!r} is not writable; choose another {flag}")


def check_output_folder(path: str | os.PathLike, overwrite: bool = False, flag: str = "--output",
                        inputs: Optional[Mapping[str, Any]] = None) -> Path:  # fmt: skip
    """Refuse an output folder that is an input or holds one, a file, or that holds anything unless ``overwrite``.

    Args:
        path: The folder a tool will write into (created later if missing).
        overwrite: Allow a non-empty folder (the tool replaces only the files it writes).
        flag: The option that named the folder, for the message.
        inputs: The tool's inputs, flag -> path (see :func:`check_not_an_input`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty folder and ``overwrite`` is false.
        PermissionError: the folder cannot be written to.
        ValueError: ``path`` is one of ``inputs`` or holds one.
    """
    check_not_an_input(path, inputs or {}, flag)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{flag} {str(path)!r} is a file; expected a folder (new, or empty)")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{flag} {str(path)!r} is not empty; pass --overwrite to write into it, or choose a new folder")
    _check_writable(path, flag)
    return path


def check_output_file(path: str | os.PathLike, overwrite: bool = False, flag: str = "--output",
                      inputs: Optional[Mapping[str, Any]] = None) -> Path:  # fmt: skip
    """Refuse an output file that is an input, a folder, or that exists and is not empty unless ``overwrite``.

    Args:
        path: The file a tool will write (atomically, at the end).
        overwrite: Allow replacing an existing file.
        flag: The option that named the file, for the message.
        inputs: The tool's inputs, flag -> path (see :func:`check_not_an_input`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        FileExistsError: ``path`` exists, is not empty, and ``overwrite`` is false.
        PermissionError: the folder it goes into cannot be written to.
        ValueError: ``path`` is one of ``inputs`` or holds one.
    """
    check_not_an_input(path, inputs or {}, flag)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {str(path)!r} is a folder; expected a file name")
    if path.is_file() and path.stat().st_size > 0 and not overwrite:
        raise FileExistsError(f"{flag} {str(path)!r} exists and is not empty; pass --overwrite to replace it")
    _check_writable(path, flag)
    return path


# ----------------------------------------------------------------------------------------------
# Config files
# ----------------------------------------------------------------------------------------------


def read_config(path: str | os.PathLike, flag: str = "--config") -> dict[str, Any]:
    """A YAML config file as a mapping of sections (``trainer``, ``model``, ``data``).

    Args:
        path: The file.
        flag: The option that named it, for the messages.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, or YAML that is not a mapping (a list, a number, a string, an empty file).
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist (expected a YAML file, e.g. configs/face_vgg.yaml)")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{flag} {str(path)!r} is not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(values, dict):
        what = "empty" if values is None else f"a YAML {type(values).__name__} ({str(values)[:40]!r})"
        raise ValueError(f"{flag} {str(path)!r} is {what}, not a mapping of sections (trainer, model, data); "
                         "expected a config such as configs/face_vgg.yaml")  # fmt: skip
    return values


# ----------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------


def progress(items: Iterable[T], desc: str, total: Optional[int] = None, enabled: bool = True) -> Iterator[T]:
    """``items`` with a tqdm progress bar on stderr, shown only when stderr is a terminal and ``enabled``.

    Args:
        items: What the loop runs over.
        desc: A short label (``"enrol"``, ``"detect"``).
        total: Number of items, when ``items`` has no length (a video stream).
        enabled: ``False`` (``--quiet``) never shows a bar.
    """
    from tqdm.auto import tqdm

    show = enabled and sys.stderr.isatty()
    return iter(tqdm(items, desc=desc, total=total, disable=not show, leave=False, dynamic_ncols=True))
