"""Explanations of any facetorch task as PNG files: Grad-CAM overlays, Guided Backprop, Guided Grad-CAM.

The library side of ``tools/explain.py`` (see :mod:`facetorch.cli.explain`) and of
:class:`facetorch.callbacks.GradCAMLogger`. A task explains itself through two hooks of
:class:`~facetorch.tasks.FaceTask`: ``cam_layer`` (the layer Grad-CAM looks at) and
``explain_target(spec)`` (the score to explain, from a ``--target`` string).

Example:
    >>> images = load_images(Path("photos"), data.channels)
    >>> written = write_explanations(task, data, images, ["gradcam", "guided"], None, Path("out"))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import matplotlib

matplotlib.use("Agg")  # headless, as in facetorch.reports
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from facetorch import io  # noqa: E402
from facetorch.data.files import IMAGE_EXTENSIONS, is_image_file  # noqa: E402
from facetorch.data.images import ImageReadError, read_image  # noqa: E402
from facetorch.data.transforms import InputSpec  # noqa: E402
from facetorch.explain.gradcam import (  # noqa: E402
    GradCAM,
    GuidedBackprop,
    SimilarityTarget,
    Target,
    eval_mode,
    normalize_guided,
    overlay_heatmap,
)
from facetorch.reports import to_display_image  # noqa: E402

__all__ = [
    "METHODS",
    "Method",
    "Rendered",
    "describe_predictions",
    "explain_batch",
    "load_images",
    "plot_explanation_grid",
    "reference_target",
    "render_explanations",
    "resolve_target",
    "to_display_image",
    "write_explanations",
]

Method = Literal["gradcam", "guided", "guided_gradcam"]
METHODS: tuple[Method, ...] = get_args(Method)
FILE_SUFFIX: dict[str, str] = {"gradcam": "gradcam_overlay", "guided": "guided", "guided_gradcam": "guided_gradcam"}
COLUMN_TITLE: dict[str, str] = {"gradcam": "Grad-CAM", "guided": "guided backprop", "guided_gradcam": "guided Grad-CAM"}
GRID_NAME = "grid.png"
MAX_GRID_ROWS = 16

LoadedImage = tuple[Path, np.ndarray]
"""An image file and its pixels, uint8 (H, W) for 1 channel or (H, W, 3) RGB."""


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


def load_images(source: str | Path, channels: Literal[1, 3]) -> list[LoadedImage]:
    """Read one image file, or every image file under a folder (recursively, sorted by path).

    Unreadable files are skipped with one notice on stderr that lists them.

    Args:
        source: An image file or a folder.
        channels: 1 (greyscale) or 3 (RGB), as the task expects.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: no readable image was found.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"Images {str(source)!r} do not exist (expected an image file or a folder)")
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if is_image_file(p))
    loaded: list[LoadedImage] = []
    unreadable: list[str] = []
    for path in paths:
        try:
            loaded.append((path, read_image(path, channels)))
        except ImageReadError as error:
            unreadable.append(str(error))
    if unreadable:
        io.notice(f"skipped {len(unreadable)} unreadable image(s): " + "; ".join(unreadable))
    if not loaded:
        raise ValueError(
            f"No readable image in {str(source)!r}: found {len(paths)} image file(s), "
            f"{len(unreadable)} unreadable (expected files ending in {sorted(IMAGE_EXTENSIONS)})"
        )
    return loaded


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def reference_target(task: nn.Module, spec: InputSpec, reference: str | Path) -> SimilarityTarget:
    """Cosine similarity to the task's embedding of ``reference``: why a face matches it.

    Raises:
        ValueError: the task does not output embeddings (it has no ``embedding_dim``).
    """
    if not hasattr(task, "embedding_dim"):
        raise ValueError(
            f"--reference needs an embedding task (such as EmbeddingTask); "
            f"{type(task).__name__} does not output embeddings. Use --target to pick a class instead."
        )
    picture = read_image(Path(reference), spec.channels)
    batch = spec.transform()(picture)[None].to(_device_of(task))
    with torch.no_grad(), eval_mode(task):
        embedding = task(batch)  # (1, D)
    return SimilarityTarget(embedding[0].detach())


def resolve_target(
    task: nn.Module,
    spec: InputSpec,
    target_spec: str | None = None,
    reference: str | Path | None = None,
) -> tuple[Target, str]:
    """The score to explain and a label for plot titles, from ``--target`` or ``--reference``."""
    if reference is not None:
        if target_spec not in (None, "", "predicted"):
            raise ValueError(f"--target {target_spec!r} and --reference cannot be combined: the reference is the target")
        return reference_target(task, spec, reference), f"similarity to {Path(reference).name}"
    return task.explain_target(target_spec), target_spec or "predicted"


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------


def explain_batch(task: nn.Module, images: Tensor, method: Method, target: Target | int | None = None) -> np.ndarray:
    """Explanation maps of one method for a batch, scaled for display.

    Args:
        task: A facetorch task (it names its Grad-CAM layer in ``cam_layer``).
        images: Model inputs (B, C, H, W), already transformed.
        method: ``gradcam``, ``guided`` or ``guided_gradcam``.
        target: Score to explain (see :meth:`FaceTask.explain_target`); ``None`` for the predicted class.

    Returns:
        ``gradcam``: heatmaps (B, H, W) in [0, 1]. ``guided`` and ``guided_gradcam``: signed maps
        (B, H, W, C) in [0, 1], where 0.5 is no gradient.
    """
    return _display_maps(_raw_maps(task, images, [_check_method(method)], target))[method]


def _raw_maps(task: nn.Module, images: Tensor, methods: Sequence[str], target: Target | int | None) -> dict[str, Tensor]:
    """Raw maps per method; Grad-CAM and Guided Backprop run once each, however many methods need them."""
    maps: dict[str, Tensor] = {}
    if "gradcam" in methods or "guided_gradcam" in methods:
        with GradCAM(task, _cam_layer(task)) as cam:
            maps["gradcam"] = cam(images, target)  # (B, H, W)
    if "guided" in methods or "guided_gradcam" in methods:
        with GuidedBackprop(task) as guided:
            maps["guided"] = guided(images, target)  # (B, C, H, W)
    if "guided_gradcam" in methods:
        # What GuidedGradCAM computes, from the two maps already at hand (no second pair of passes).
        maps["guided_gradcam"] = maps["guided"] * maps["gradcam"][:, None]
    return {method: maps[method] for method in methods}


def _display_maps(raw: dict[str, Tensor]) -> dict[str, np.ndarray]:
    shown = {}
    for method, values in raw.items():
        if method == "gradcam":
            shown[method] = values.detach().cpu().numpy()
        else:
            shown[method] = normalize_guided(values).permute(0, 2, 3, 1).cpu().numpy()
    return shown


@dataclass
class Rendered:
    """A batch rendered as uint8 pictures, ready to save or plot.

    Attributes:
        images: The resized inputs, (H, W) or (H, W, 3) each.
        panels: Per method, one picture per image: the heatmap overlay for ``gradcam``, the
            display-normalised map for ``guided`` and ``guided_gradcam``.
        captions: The model's prediction per image, e.g. ``"face (0.93)"``.
    """

    images: list[np.ndarray]
    panels: dict[str, list[np.ndarray]]
    captions: list[str]


def render_explanations(
    task: nn.Module,
    images: Tensor,
    methods: Sequence[str],
    target: Target | int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Rendered:
    """Explain a batch with each method and render inputs, maps and prediction captions.

    Args:
        task: A facetorch task.
        images: Model inputs (B, C, H, W) on the task's device.
        methods: Any of ``gradcam``, ``guided``, ``guided_gradcam``.
        target: Score to explain; ``None`` for the predicted class.
        mean: The transform's per-channel mean, to show the inputs as they were before it.
        std: The transform's per-channel std.
    """
    methods = _check_methods(methods)
    maps = _display_maps(_raw_maps(task, images, methods, target))
    pictures = [to_display_image(image, mean, std) for image in images]
    panels: dict[str, list[np.ndarray]] = {}
    for method, values in maps.items():
        if method == "gradcam":
            panels[method] = [overlay_heatmap(picture, heat) for picture, heat in zip(pictures, values)]
        else:
            panels[method] = [_to_uint8(value) for value in values]
    return Rendered(pictures, panels, describe_predictions(task, images, target))


def describe_predictions(task: nn.Module, images: Tensor, target: Target | int | None = None) -> list[str]:
    """One caption per image: predicted class and probability for classifiers, else the target score."""
    with torch.no_grad(), eval_mode(task):
        output = task(images)
    names = getattr(task, "class_names", None)
    if isinstance(output, Tensor) and output.ndim == 2 and names is not None and output.shape[1] == len(names):
        probs, classes = output.float().softmax(dim=1).max(dim=1)
        return [f"{names[k]} ({p:.2f})" for p, k in zip(probs.tolist(), classes.tolist())]
    if callable(target):
        return [f"score {s:.3f}" for s in target(output).float().tolist()]
    return ["" for _ in range(len(images))]


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def write_explanations(
    task: nn.Module,
    spec: InputSpec,
    images: Sequence[LoadedImage],
    methods: Sequence[str],
    target_spec: str | None,
    output: str | Path,
    batch_size: int = 16,
    *,
    reference: str | Path | None = None,
    overwrite: bool = False,
    max_grid_rows: int = MAX_GRID_ROWS,
    progress: bool = True,
) -> list[Path]:
    """Write explanation PNGs for each image, and one ``grid.png`` of the first ``max_grid_rows``.

    Per image ``<stem>_gradcam_overlay.png``, ``<stem>_guided.png`` and ``<stem>_guided_gradcam.png``
    for the methods asked, at the model's input size. Images from sub-folders keep their relative
    sub-folder under ``output``, so equal file names in different folders do not collide.

    Args:
        task: A facetorch task, with its weights loaded; it stays on its device.
        spec: How the task is fed (its checkpoint's input, or the data module's ``input_spec``).
        images: From :func:`load_images`.
        methods: Any of ``gradcam``, ``guided``, ``guided_gradcam`` (or ``all``).
        target_spec: ``--target``: ``None`` / ``"predicted"``, a class name or an index.
        output: Output folder.
        batch_size: Images per forward / backward pass.
        reference: An image to explain similarity to (embedding tasks); excludes ``target_spec``.
        overwrite: Write into a non-empty ``output`` (files of the same name are replaced, others kept).
        max_grid_rows: Images shown in ``grid.png``.
        progress: Show a progress bar over the batches (on a terminal).

    Returns:
        The written files, the grid last.

    Raises:
        FileExistsError: ``output`` is not empty and ``overwrite`` is false.
    """
    methods = _check_methods(methods)
    output = Path(output)
    io.check_output_folder(output, overwrite)
    if not images:
        raise ValueError("Expected at least one image to explain, got none")
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1, got {batch_size}")
    target, target_label = resolve_target(task, spec, target_spec, reference)
    transform = spec.transform()
    names = _output_names([path for path, _ in images])
    written: list[Path] = []
    grid_rows: list[list[np.ndarray]] = []
    grid_captions: list[str] = []
    for start in io.progress(range(0, len(images), batch_size), "explain", enabled=progress):
        chunk = images[start : start + batch_size]
        batch = torch.stack([transform(picture) for _, picture in chunk]).to(_device_of(task))
        rendered = render_explanations(task, batch, methods, target, spec.mean, spec.std)
        for i, (path, _) in enumerate(chunk):
            name = names[start + i]
            for method in methods:
                file = output / f"{name}_{FILE_SUFFIX[method]}.png"
                io.write_png(file, rendered.panels[method][i])
                written.append(file)
            if len(grid_rows) < max_grid_rows:
                grid_rows.append([rendered.images[i], *(rendered.panels[m][i] for m in methods)])
                grid_captions.append(f"{_shorten(path.name)}\n{rendered.captions[i]}")
    shown = f"first {len(grid_rows)} of {len(images)}" if len(images) > len(grid_rows) else f"{len(images)}"
    grid = output / GRID_NAME
    plot_explanation_grid(
        grid_rows,
        grid_captions,
        ["input", *(COLUMN_TITLE[m] for m in methods)],
        f"{type(task).__name__}, target: {target_label} ({shown} images)",
        grid,
    )
    written.append(grid)
    return written


def plot_explanation_grid(
    rows: Sequence[Sequence[np.ndarray]],
    row_captions: Sequence[str],
    column_titles: Sequence[str],
    title: str,
    path: str | Path,
) -> None:
    """A grid of uint8 pictures, one row per image, captions at the left, written atomically."""
    if not rows:
        raise ValueError("Expected at least one row of pictures for the grid, got none")
    columns = len(column_titles)
    height, width = rows[0][0].shape[:2]
    cell = 1.6  # inches for the longer side of a picture
    scale = cell / max(height, width)
    figure, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(columns * width * scale + 1.2, len(rows) * height * scale + 0.8),
        squeeze=False,
        layout="constrained",  # room for the captions and the title, no gaps between images
    )
    for r, (pictures, caption) in enumerate(zip(rows, row_captions)):
        for c, picture in enumerate(pictures):
            axis = axes[r, c]
            # Fixed 0..255 range: a grey picture must not be contrast-stretched by imshow.
            axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(column_titles[c], fontsize=8)
        axes[r, 0].set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=7)
    figure.suptitle(title, fontsize=9)
    io.save_figure(figure, path)


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _check_method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"Expected a method in {METHODS}, got {method!r}")
    return method  # type: ignore[return-value]


def _check_methods(methods: Sequence[str]) -> list[str]:
    """Known methods in canonical order, without repeats; ``"all"`` means every method."""
    if isinstance(methods, str):
        methods = [methods]
    asked = set(METHODS) if "all" in methods else {_check_method(m) for m in methods}
    if not asked:
        raise ValueError(f"Expected at least one method from {METHODS} (or 'all'), got none")
    return [m for m in METHODS if m in asked]


def _output_names(paths: Sequence[Path]) -> list[str]:
    """Names relative to the deepest common folder, without suffix (``face/f000``); repeats get ``_2``..."""
    absolute = [p.absolute() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    names: list[str] = []
    seen: dict[str, int] = {}
    for path in absolute:
        name = path.relative_to(root).with_suffix("").as_posix()
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")  # e.g. a.png and a.jpg
    return names


def _to_uint8(values: np.ndarray) -> np.ndarray:
    picture = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return picture[..., 0] if picture.ndim == 3 and picture.shape[2] == 1 else picture


def _shorten(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cam_layer(task: nn.Module) -> str:
    try:
        return task.cam_layer
    except (AttributeError, NotImplementedError) as error:
        raise TypeError(f"Grad-CAM needs a task that names its layer in `cam_layer`: {error}") from error


def _device_of(module: nn.Module) -> torch.device:
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
