"""``python tools/prepare_shards.py``: write a data set as streaming shards (LitData) for ``data.shards``.

Examples:
    python tools/prepare_shards.py --layout identity_folders --images data/casia --output shards/casia
    python tools/prepare_shards.py --layout identity_folders --images data/lfw --output shards/lfw64 --store prepared
        --image_size 64 64 --center_crop 0.575 0.5 --num_workers 8   (one line)
    python tools/train.py --config configs/embedding_arcface.yaml --data.shards shards/casia

``--store raw`` (default) keeps each file's encoded bytes, so training decodes and prepares them
as it would the folder; ``--store prepared`` keeps the uint8 arrays after the centre crop and
resize (no decoding at training time, but only that input size). A folder with ``train/`` and
``val/`` or ``test/`` folders is written as ``SHARDS/train``, ``SHARDS/val``, ``SHARDS/test``.
Copy SHARDS to object storage as it is (e.g. ``aws s3 sync SHARDS s3://bucket/casia``) and
train with ``--data.shards s3://bucket/casia``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from facetorch import io
from facetorch.cli.common import add_output, add_quiet, image_side, positive_fraction, positive_int, run_tool, tool_parser
from facetorch.data.layouts import LAYOUTS, get_layout
from facetorch.data.shards import write_shards
from facetorch.data.transforms import InputSpec

PROG = "prepare_shards.py"
SPLITS = ("train", "val", "test")
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)?\s*$", re.IGNORECASE)


def byte_size(text: str) -> str:
    """An argparse type: a chunk size such as ``64MB`` (B, KB, MB, GB or TB; at least 1 KB)."""
    match = _BYTES.match(text)
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    if not match or float(match.group(1)) * scale[(match.group(2) or "B").upper()] < 1e3:
        raise argparse.ArgumentTypeError(f"expected a size of at least 1KB such as 64MB (B, KB, MB, GB, TB), got {text!r}")
    return text.strip()


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    parser = tool_parser(PROG, __doc__)
    shardable = sorted(name for name, layout in LAYOUTS.items() if layout.shardable)
    parser.add_argument("--layout", required=True, choices=shardable, help="the layout of --images")
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", help="the data folder (that layout)")
    add_output(parser, "the shard folder, new or empty",
               overwrite_help="write into a non-empty --output (an earlier shard set there is replaced)")  # fmt: skip
    parser.add_argument("--store", choices=["raw", "prepared"], default="raw",
                        help="raw: each file's bytes; prepared: uint8 arrays after the crop and resize")  # fmt: skip
    parser.add_argument("--image_size", type=image_side, nargs=2, metavar=("H", "W"), help="--store prepared: the model input")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3, help="--store prepared: 1 grey, 3 RGB")
    parser.add_argument("--center_crop", type=positive_fraction, nargs=2, metavar=("FH", "FW"), default=None,
                        help="--store prepared: fractions kept around the centre before resizing")  # fmt: skip
    parser.add_argument("--chunk_bytes", type=byte_size, default="64MB", help="target size of a chunk file (e.g. 64MB)")
    parser.add_argument("--chunk_size", type=positive_int, default=None, help="samples per chunk file, instead of --chunk_bytes")
    parser.add_argument("--num_workers", type=positive_int, default=1, help="processes that write (the sample order is kept)")
    add_quiet(parser)
    return parser


def _folders(images: Path, layout_name: str) -> dict[str, Path]:
    """The folders to write: the split folders of an already split root (as FaceDataModule reads it), else the root."""
    layout = get_layout(layout_name)
    if not images.is_dir():
        raise FileNotFoundError(f"--images {str(images)!r} is not a folder")
    present = [name for name in SPLITS if (images / name).is_dir()]
    if "train" in present and (layout.train_folder_marks_split or len(present) > 1):
        return {name: images / name for name in present}
    return {"": images}


def prepare_shards(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, write the shards, print (and return) a JSON summary."""
    args = build_parser().parse_args(argv)
    output = io.check_output_folder(args.output, args.overwrite, inputs={"--images": args.images})
    spec = None
    if args.store == "prepared":
        if args.image_size is None:
            raise ValueError("--store prepared needs --image_size H W (the model input the images are prepared for)")
        crop = tuple(args.center_crop) if args.center_crop else None
        spec = InputSpec((args.image_size[0], args.image_size[1]), args.channels, "unit", crop)  # type: ignore[arg-type]
    layout = get_layout(args.layout)
    summary: dict[str, Any] = {"output": str(output), "layout": args.layout, "store": args.store, "splits": {}}
    start = time.perf_counter()
    total = 0
    for split, folder in _folders(args.images, args.layout).items():
        index = layout.scan(folder, 1, None)
        if index.skipped:
            io.notice(f"--images {str(folder)!r}: {len(index.skipped)} entr{'y' if len(index.skipped) == 1 else 'ies'} not "
                      f"written (only images directly inside each class folder are): {io.first_few(index.skipped)}")  # fmt: skip
        target = output / split if split else output
        began = time.perf_counter()
        meta = write_shards(index, target, args.layout, args.store, spec, args.chunk_bytes, args.chunk_size, args.num_workers)
        seconds = time.perf_counter() - began
        size = sum(path.stat().st_size for path in target.glob("chunk-*.bin"))
        summary["splits"][split or "all"] = {
            "samples": meta["num_samples"], "classes": len(meta["class_names"]), "chunks": len(list(target.glob("chunk-*.bin"))),
            "bytes": size, "seconds": round(seconds, 2), "samples_per_s": round(meta["num_samples"] / max(seconds, 1e-9), 1),
        }  # fmt: skip
        total += meta["num_samples"]
    summary["samples"] = total
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    """``tools/prepare_shards.py``: :func:`prepare_shards`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, prepare_shards, argv))
