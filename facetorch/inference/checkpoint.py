"""The one way facetorch loads a trained checkpoint outside the Trainer.

:func:`load_task` reads a Lightning checkpoint once, safely (``weights_only=True``: no pickled
code runs), checks that it holds the kind of task the caller needs, rebuilds the task from its
saved hyper-parameters without reading any pretrained weight file (the checkpoint's own weights
replace them at once), and rebuilds the evaluation input from the saved data settings, so a
model is always fed the way it was validated::

    loaded = load_task("runs/embedding_triplet/version_0/checkpoints/best.ckpt", EmbeddingTask)
    batch = torch.stack([loaded.transform(image) for image in images])
    embeddings = loaded.task.embed(batch)
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Optional, TypeVar

import torch

from facetorch.data.transforms import AlbumentationsTransform, InputSpec
from facetorch.tasks import FaceTask

__all__ = ["CheckpointError", "LoadedTask", "load_task", "model_fingerprint", "read_checkpoint", "restore_weights",
           "task_class_name"]

TaskT = TypeVar("TaskT", bound=FaceTask)

# Constructor arguments that only say where initial weights come from; a checkpoint's own
# weights replace them, so restoring never reads those files.
INITIAL_WEIGHT_ARGS = {"pretrained": False, "weights_path": None}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, not a facetorch task, or another task."""


@dataclass(frozen=True)
class LoadedTask(Generic[TaskT]):
    """A task restored from a checkpoint, in eval mode, with how to feed it.

    Attributes:
        task: The task with the checkpoint's weights.
        path: The checkpoint file.
        input: The evaluation input of the data it was trained on (size, channels, normalisation, crop).
        transform: ``input``'s deterministic transform: uint8 image (H, W) or (H, W, 3) -> (C, H, W) tensor.
        class_name: The task's class name as saved (``FaceClassifierTask``, ``EmbeddingTask``, ...).
        checkpoint: The checkpoint as read (state dict, hyper-parameters, training state).
    """

    task: TaskT
    path: Path
    input: InputSpec
    transform: AlbumentationsTransform
    class_name: str
    checkpoint: dict[str, Any]


def read_checkpoint(path: str | Path, flag: str = "--ckpt_path") -> dict[str, Any]:
    """Read a Lightning checkpoint of a facetorch task, without running pickled code.

    Args:
        path: The checkpoint file.
        flag: The option that named it, for error messages.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a folder.
        CheckpointError: the file is empty, truncated, not a torch checkpoint, or holds no
            ``state_dict`` and ``hyper_parameters``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{flag} {str(path)!r} does not exist (expected a checkpoint such as runs/<name>/version_0/checkpoints/best.ckpt)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} is a folder; expected a checkpoint file (.ckpt)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{flag} {str(path)!r} is empty (0 bytes); expected a checkpoint written by tools/train.py")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{flag} {str(path)!r} is not a readable facetorch checkpoint (truncated, or another kind of file): {reason[:200]}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{flag} {str(path)!r} is not a facetorch checkpoint: expected a Lightning checkpoint with 'state_dict' "
            f"and 'hyper_parameters', found {found}"
        )
    return checkpoint


def task_class_name(checkpoint: dict[str, Any]) -> Optional[str]:
    """The class path of the task saved in a checkpoint (``facetorch.tasks.EmbeddingTask``), if recorded."""
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    return str(class_path) if class_path else None


def _resolve_class(class_path: Optional[str], expected: type[TaskT], path: Path, flag: str, tool: str) -> type[TaskT]:
    if class_path is None:
        if inspect.isabstract(expected) or expected is FaceTask:
            raise CheckpointError(f"{flag} {str(path)!r} does not record its task class; it was not written by tools/train.py")
        return expected
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(
            f"{flag} {str(path)!r} holds a {class_path} checkpoint, a class that cannot be imported here: {error}"
        ) from error
    if not (isinstance(cls, type) and issubclass(cls, expected)):
        article = "an" if expected.__name__[0] in "AEIOU" else "a"
        raise CheckpointError(
            f"{flag} {str(path)!r} is a{'n' if name[0] in 'AEIOU' else ''} {name} checkpoint; {tool} needs {article} "
            f"{expected.__name__} checkpoint (from a config whose model is {expected.__name__})"
        )
    return cls


def _init_args(cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    """Saved hyper-parameters as constructor arguments, with initial-weight sources switched off."""
    args = {key: value for key, value in hparams.items() if not key.startswith("_")}
    parameters = inspect.signature(cls.__init__).parameters
    for key, value in INITIAL_WEIGHT_ARGS.items():
        if key in parameters or key in args:
            args[key] = value
    return args


def load_task(
    path: str | Path,
    expected: type[TaskT] = FaceTask,  # type: ignore[assignment]
    device: str | torch.device = "cpu",
    flag: str = "--ckpt_path",
    tool: str = "this tool",
) -> LoadedTask[TaskT]:
    """Restore the task of a checkpoint, in eval mode on ``device``, with its evaluation input.

    Args:
        path: A checkpoint written by ``tools/train.py`` (or any facetorch Trainer run).
        expected: The task class the caller needs (a subclass is accepted).
        device: Where the task goes.
        flag: The option that named the checkpoint, for error messages.
        tool: Who needs the task, for error messages (``"gallery.py"``).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is not a readable facetorch checkpoint, holds another task,
            or its weights do not fit the task its hyper-parameters describe.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, flag)
    cls = _resolve_class(task_class_name(checkpoint), expected, path, flag, tool)
    data = checkpoint.get("datamodule_hyper_parameters")
    if not data or "image_size" not in data:
        raise CheckpointError(
            f"{flag} {str(path)!r} holds no data settings (datamodule_hyper_parameters); "
            "train it with tools/train.py so its input size and normalisation are saved"
        )
    try:
        task = cls(**_init_args(cls, dict(checkpoint["hyper_parameters"])))
    except (TypeError, KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{flag} {str(path)!r}: its weights do not fit a {cls.__name__}: {_first_line(error)}") from error
    restore_weights(task, checkpoint, path, flag)
    task.to(device).eval()
    spec = InputSpec.from_hparams(data)
    return LoadedTask(task, path, spec, spec.transform(), cls.__name__, checkpoint)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)[:300]


def restore_weights(task: FaceTask, checkpoint: dict[str, Any], path: str | Path, flag: str = "--ckpt_path") -> None:
    """Put a checkpoint's weights (and what its task saves beside them) into ``task``, as ``load_from_checkpoint`` does.

    Raises:
        CheckpointError: the weights do not fit the task (another architecture, another number of classes).
    """
    try:
        task.on_load_checkpoint(checkpoint)
        task.load_state_dict(checkpoint["state_dict"], strict=True)
    except (TypeError, KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{flag} {str(path)!r}: its weights do not fit a {type(task).__name__}: "
                              f"{_first_line(error)}") from error  # fmt: skip


def model_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a model's weights: galleries remember which model embedded them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name.startswith("classifier."):
            continue  # the training-only classification head does not change embeddings
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
