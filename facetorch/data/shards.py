"""A data set as streaming shards (Lightning's LitData): written once from a layout's folder, read by sample.

``python tools/prepare_shards.py --layout identity_folders --images DIR --output SHARDS`` indexes
``DIR`` with the layout's own scanner and writes every sample with ``litdata.optimize`` into
chunk files (``SHARDS/chunk-*.bin`` and LitData's ``index.json``), plus ``SHARDS/facetorch.json``:
the layout, the class (identity) names, every sample's label in the scanner's order, and how the
images are stored. A folder already split into ``train/``, ``val/``, ``test/`` becomes
``SHARDS/train``, ``SHARDS/val``, ``SHARDS/test``, each a shard set of its own.

Each sample is ``{"image", "label", "index", "name"}``: the image as the file's own encoded bytes
(``--store raw``: decoded exactly as a folder run decodes the file) or as the uint8 array after
:meth:`InputSpec.prepare` (``--store prepared``: no decoding or resizing at training time; the
DataModule then refuses another input size or crop), the label, the sample's position in the
scanner's order and its file name relative to ``DIR``.

``data.shards: SHARDS`` (a local folder, or any URL LitData reads, such as ``s3://bucket/path``)
trains from them. :func:`scan_shards` reads ``facetorch.json`` only, and gives a
:class:`ShardIndex`: the same labels, class names and sample order as scanning the folder, so
the same seeded splits by image or by identity, the same P x K and balanced-pair samplers, and
the same cache. Samples are read by position (``StreamingDataset[i]``); a rank reads only the
samples its own batches name (under DDP, the samplers give each rank its own identities or its
own share of the indices), and LitData fetches from object storage only the chunks they sit in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from facetorch import io
from facetorch.data.datasets import SampleIndex
from facetorch.data.images import ImageReadError, decode_image
from facetorch.data.transforms import InputSpec

__all__ = ["META_NAME", "SHARD_FORMAT", "ShardIndex", "is_url", "join", "read_meta", "scan_shards", "write_shards"]

META_NAME = "facetorch.json"
SHARD_FORMAT = "facetorch-shards/1"
Store = Literal["raw", "prepared"]
SPLITS = ("train", "val", "test")


def is_url(location: str) -> bool:
    """Whether ``location`` names object storage (``s3://``, ``gs://``, ...) rather than a local folder."""
    return "://" in str(location)


def join(location: str, *names: str) -> str:
    """``location/name`` for a local folder or a URL."""
    if is_url(location):
        return "/".join([str(location).rstrip("/"), *names])
    return str(Path(location, *names))


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_meta(location: str, storage_options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """``facetorch.json`` of a shard set (downloaded through LitData for a URL).

    Raises:
        FileNotFoundError: no shard set there (or not one written by ``tools/prepare_shards.py``).
        ValueError: the file is not a facetorch shard description.
    """
    where = join(location, META_NAME)
    if is_url(location):
        from litdata.streaming.downloader import get_downloader

        with tempfile.TemporaryDirectory() as folder:
            local = os.path.join(folder, META_NAME)
            try:
                get_downloader(str(location), folder, [], storage_options or {}).download_file(where, local)
                text = Path(local).read_text(encoding="utf-8")
            except Exception as error:  # each cloud client raises its own errors
                raise FileNotFoundError(
                    f"data.shards {location!r}: cannot read {where!r} ({type(error).__name__}: {error}); "
                    "expected a shard set written by tools/prepare_shards.py"
                ) from error
    else:
        if not Path(where).is_file():
            found = "the folder does not exist" if not Path(location).exists() else f"no {META_NAME} in it"
            raise FileNotFoundError(
                f"data.shards {str(location)!r} is not a shard set ({found}); write one with "
                "tools/prepare_shards.py --images DIR --output SHARDS"
            )
        text = Path(where).read_text(encoding="utf-8")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where!r} is not valid JSON ({error}); rewrite the shards with tools/prepare_shards.py") from error
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{where!r}: expected format {SHARD_FORMAT!r}, found {found!r}; rewrite the shards with this version")
    return meta


def has_shards(location: str) -> bool:
    """Whether ``location`` holds a shard set (a local check; URLs are tried by reading their description)."""
    if not is_url(location):
        return Path(location, META_NAME).is_file()
    try:
        read_meta(location)
    except (FileNotFoundError, ValueError):
        return False
    return True


_READERS: dict[tuple[str, int], Any] = {}  # (location, pid) -> StreamingDataset: one per process, never pickled


def _reader(location: str) -> Any:
    key = (location, os.getpid())
    if key not in _READERS:
        from litdata import StreamingDataset

        # Samples are read by position in the samplers' random order: decode only the row asked for.
        # LitData's default for small samples decodes a window of 256 rows around it and keeps it,
        # which the next random read throws away (about 40 times the work per sample, in loader
        # workers that share the CPU with the training step).
        _READERS[key] = StreamingDataset(location, batch_decode=0)
    return _READERS[key]


@dataclass
class ShardIndex(SampleIndex):
    """A :class:`SampleIndex` whose sources are positions in a shard set.

    Attributes:
        shards: The shard set (local folder or URL).
        store: ``raw`` (encoded files) or ``prepared`` (arrays after ``InputSpec.prepare``).
        input: The :class:`InputSpec` fields of prepared shards, else ``None``.
    """

    shards: str = ""
    store: str = "raw"
    input: Optional[dict[str, Any]] = field(default=None)

    def subset(self, indices: Sequence[int]) -> ShardIndex:
        """The samples at ``indices``, still read from the same shards."""
        positions = np.asarray(self.sources)[np.asarray(indices, dtype=np.int64)]
        return dataclasses.replace(self, sources=positions, labels=[self.labels[i] for i in indices], dropped={})

    @property
    def prepared(self) -> bool:
        return self.store == "prepared"

    def read(self, i: int, channels: Literal[1, 3]) -> np.ndarray:
        """Sample ``i`` from its shard: decoded from the stored bytes, or the stored prepared array."""
        position = int(self.sources[i])
        item = _reader(self.shards)[position]
        name = f"{self.shards} sample {position} ({item.get('name', '?')})"
        if self.prepared:
            image = np.asarray(item["image"], dtype=np.uint8)
            if (image.ndim == 3) != (channels == 3):
                raise ImageReadError(f"{name}: stored with {'3' if image.ndim == 3 else '1'} channel(s), {channels} asked")
            return image
        return decode_image(bytes(item["image"]), channels, name)

    def check_input(self, spec: InputSpec) -> None:
        """Refuse prepared shards made for another input than ``spec`` (the normalisation may differ).

        Raises:
            ValueError: size, channels or preparation differ; the message says how to fix it.
        """
        if not self.prepared or self.input is None:
            return
        wanted = {key: _plain(value) for key, value in dataclasses.asdict(spec).items() if key != "normalization"}
        stored = {key: _plain(value) for key, value in self.input.items() if key != "normalization"}
        if wanted != stored:
            differ = sorted(key for key in set(wanted) | set(stored) if wanted.get(key) != stored.get(key))
            raise ValueError(
                f"data.shards {self.shards!r} holds images prepared for {stored}, but the data asks for {wanted} "
                f"(differs in {differ}); set the data options to match, or write the shards with --store raw"
            )


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def scan_shards(location: str, min_images: int = 1, class_names: Optional[Sequence[str]] = None) -> ShardIndex:
    """Index a shard set like the folder it was written from: a :data:`~facetorch.data.layouts.Scanner` for shards.

    Labels follow the stored class names, or ``class_names`` when given; classes with fewer than
    ``min_images`` samples are dropped (and counted in ``dropped``), as the folder scanner does.

    Raises:
        FileNotFoundError: no shard set at ``location``.
        ValueError: nothing is left, or a stored class is not among ``class_names``.
    """
    meta = read_meta(location)
    stored_names: list[str] = list(meta["class_names"])
    labels = np.asarray(meta["labels"], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(stored_names))
    dropped = {stored_names[k]: int(n) for k, n in enumerate(counts) if 0 < n < min_images}
    kept_names = [name for k, name in enumerate(stored_names) if counts[k] >= max(1, min_images)]
    if not kept_names:
        raise ValueError(f"No class in shards {location!r} holds at least {min_images} sample(s) ({len(stored_names)} stored)")
    names = list(class_names) if class_names is not None else kept_names
    unknown = sorted(set(kept_names) - set(names))
    if unknown:
        raise ValueError(f"Classes {unknown[:10]} in shards {location!r} are not among the model's {len(names)} classes")
    new_label = {name: i for i, name in enumerate(names)}
    remap = np.array([new_label.get(name, -1) for name in stored_names], dtype=np.int64)
    keep = np.flatnonzero(counts[labels] >= max(1, min_images))
    return ShardIndex(
        sources=keep, labels=remap[labels[keep]].tolist(), class_names=names, root=str(location), dropped=dropped,
        shards=str(location), store=meta["store"], input=meta.get("input"),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


class _Sample:
    """What ``litdata.optimize`` stores for one position of an index (a picklable callable).

    An unreadable image must not raise inside LitData's worker processes (the others would be
    left waiting): it is noted in ``errors`` (a folder, one file per worker) and stored as an
    empty placeholder, and :func:`write_shards` then refuses the whole set, naming the files.
    """

    def __init__(self, index: SampleIndex, store: Store, spec: Optional[InputSpec], root: Path, errors: Path) -> None:
        self.index, self.store, self.spec, self.root, self.errors = index, store, spec, root, errors

    def __call__(self, position: int) -> dict[str, Any]:
        source = self.index.sources[position]
        name = os.path.relpath(source, self.root) if isinstance(source, (str, os.PathLike)) else str(position)
        try:
            if self.store == "prepared":
                assert self.spec is not None
                image: Any = np.ascontiguousarray(self.spec.prepare(self.index.read(position, self.spec.channels)))
            else:
                image = Path(source).read_bytes()
                decode_image(image, 1, str(source), check_only=True)  # a broken file fails here, not at training
        except (ImageReadError, OSError) as error:
            with open(self.errors / f"{os.getpid()}.txt", "a", encoding="utf-8") as handle:
                handle.write(" ".join(str(error).split()) + "\n")
            image = np.zeros(prepared_shape(self.spec), np.uint8) if self.store == "prepared" and self.spec else b""
        return {"image": image, "label": int(self.index.labels[position]), "index": int(position), "name": name}


def prepared_shape(spec: InputSpec) -> tuple[int, ...]:
    """The shape of ``spec.prepare``'s output: (H, W) grey or (H, W, 3) RGB."""
    height, width = spec.image_size
    return (height, width) if spec.channels == 1 else (height, width, 3)


def _clear(output: Path) -> None:
    """Remove what an earlier shard set left in ``output`` (only the files this module writes)."""
    for path in [*output.glob("chunk-*.bin"), output / "index.json", output / META_NAME]:
        if path.is_file():
            path.unlink()


def _check_order(output: str, count: int) -> None:
    """The shard set's sample ``i`` must be the scanner's sample ``i``: check the first and last of each chunk."""
    from litdata import StreamingDataset

    with open(os.path.join(output, "index.json"), encoding="utf-8") as handle:
        chunks = json.load(handle)["chunks"]
    dataset = StreamingDataset(output)
    if len(dataset) != count:
        raise RuntimeError(f"litdata wrote {len(dataset)} samples to {output!r}, expected {count}")
    start = 0
    for chunk in chunks:
        for position in {start, start + chunk["chunk_size"] - 1}:
            if int(dataset[position]["index"]) != position:
                raise RuntimeError(f"litdata stored the samples of {output!r} out of order (sample {position})")
        start += chunk["chunk_size"]


def write_shards(
    index: SampleIndex,
    output: str | Path,
    layout: str,
    store: Store = "raw",
    spec: Optional[InputSpec] = None,
    chunk_bytes: str | int = "64MB",
    chunk_size: Optional[int] = None,
    num_workers: int = 1,
) -> dict[str, Any]:
    """Write ``index`` as a shard set in ``output`` (a local folder); returns its description.

    Args:
        index: The samples, as a layout's scanner gives them (sources are files).
        output: The folder (created; the shard files of an earlier set there are replaced).
        layout: The layout the index was scanned with (stored, and checked when training).
        store: ``raw`` (each file's bytes) or ``prepared`` (``spec.prepare``'s uint8 arrays).
        spec: The input to prepare for (``store="prepared"`` only).
        chunk_bytes: Target size of a chunk file (LitData's ``chunk_bytes``), unless ``chunk_size``.
        chunk_size: Samples per chunk file instead of a byte size.
        num_workers: Processes that write (the sample order is kept).

    Raises:
        ValueError: ``prepared`` without ``spec``, an empty index, or an unreadable image (named).
    """
    from litdata import optimize

    if store not in ("raw", "prepared"):
        raise ValueError(f"--store must be raw or prepared, got {store!r}")
    if store == "prepared" and spec is None:
        raise ValueError("--store prepared needs the model input (--image_size, --channels, --center_crop)")
    if len(index) == 0:
        raise ValueError(f"{index.root!r} holds no sample to write")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _clear(output)
    sizes = {"chunk_size": int(chunk_size)} if chunk_size else {"chunk_bytes": chunk_bytes}
    with tempfile.TemporaryDirectory(prefix="facetorch-shards-") as errors:
        optimize(
            _Sample(index, store, spec, Path(index.root), Path(errors)), list(range(len(index))), str(output), **sizes,
            num_workers=max(1, min(int(num_workers), len(index))), keep_data_ordered=True, reorder_files=False,
            start_method="fork", verbose=False,
        )  # fmt: skip
        problems = [line for path in sorted(Path(errors).glob("*.txt")) for line in path.read_text().splitlines()]
    if problems:
        _clear(output)
        raise ValueError(
            f"{len(problems)} unreadable image(s) under {index.root!r}, e.g. {problems[0]}; fix or remove them and rerun"
        )
    _check_order(str(output), len(index))
    meta = {
        "format": SHARD_FORMAT,
        "layout": layout,
        "store": store,
        "input": dataclasses.asdict(spec) if store == "prepared" and spec is not None else None,
        "num_samples": len(index),
        "class_names": list(index.class_names),
        "labels": [int(label) for label in index.labels],
        "source": str(index.root),
        "dropped": dict(index.dropped),
    }
    io.write_json(output / META_NAME, meta)  # last: a folder without it is an unfinished shard set
    return meta
