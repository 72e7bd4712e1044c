"""Every numeric flag and config value of every tool, fed random values (hypothesis): never a traceback, never a silent run.

A value is either refused with an argument error (exit code 2) that names the flag, or parsed into
a number of the flag's kind (:mod:`facetorch.ranges`), so no tool starts a run with ``--max_frames -1``
or ``--threshold nan``. The Lightning tools (train, evaluate, export, explain) take their numbers
from the config's data and model sections: the data module and the tasks check them when built.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facetorch import ranges
from facetorch.cli import benchmark, detect, gallery, prepare_boxes, prepare_crops, prepare_shards, serve, synthetic_faces
from facetorch.cli.export import OPSET
from facetorch.data.datamodule import DATA_VALUES, FaceDataModule
from facetorch.tasks import EmbeddingTask, FaceClassifierTask, FaceDetectorTask
from facetorch.tasks.base import MODEL_VALUES


def _gallery_parser() -> argparse.ArgumentParser:
    return gallery.build_parser(gallery.__doc__)


# tool -> (its parser, the subcommand if any, the other arguments it needs to parse)
TOOLS: dict[str, tuple[Callable[[], argparse.ArgumentParser], list[str]]] = {
    "detect": (detect.build_parser, ["--ckpt_path", "c.ckpt", "--source", "s"]),
    "gallery enroll": (_gallery_parser, ["enroll", "--images", "i", "--gallery", "g.db"]),
    "gallery recognize": (_gallery_parser, ["recognize", "--gallery", "g.db", "--source", "s", "--output", "o"]),
    "gallery identify": (_gallery_parser, ["identify", "--gallery", "g.db", "--images", "i"]),
    "gallery verify": (_gallery_parser, ["verify", "a.png", "b.png"]),
    "gallery evaluate": (_gallery_parser, ["evaluate", "--gallery", "g.db", "--known", "k", "--unknown", "u"]),
    "gallery split": (_gallery_parser, ["split", "--images", "i", "--people", "1", "--per_person", "1", "--output", "o"]),
    "gallery compose": (_gallery_parser, ["compose", "--lfw", "l", "--output", "o"]),
    "gallery score": (_gallery_parser, ["score", "--truth", "t.csv", "--recognitions", "r.csv"]),
    "gallery cluster": (_gallery_parser, ["cluster", "--images", "i", "--output", "o"]),
    "gallery name": (_gallery_parser, ["name", "--clusters", "c", "--cluster", "0", "--name", "n", "--gallery", "g.db"]),
    "gallery cluster-set": (_gallery_parser, ["cluster-set", "--images", "i", "--output", "o"]),
    "serve": (serve._parser, ["--gallery", "g.db"]),
    "prepare_crops": (prepare_crops.build_parser, ["--labelme", "l", "--output", "o"]),
    "prepare_boxes": (prepare_boxes.build_parser, ["--images", "i", "--output", "o"]),
    "prepare_shards": (prepare_shards.build_parser, ["--layout", "identity_folders", "--images", "i", "--output", "o"]),
    "benchmark": (benchmark._parser, ["--task", "scan"]),
    "synthetic_faces": (synthetic_faces.build_parser, ["--output", "o"]),
}

# Numbers as a careless user types them: negative, zero, huge, fractional, NaN, infinite, not a number.
TYPED = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "inf", "1e400", "-0", "0.0", "1,5", "", "two", "0x10", "1e3", " 3 "]),
)


def actions_of(tool: str) -> list[argparse.Action]:
    """The actions of the tool's (sub)command."""
    build, args = TOOLS[tool]
    parser = build()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices[args[0]]._actions)
    return list(parser._actions)


def numeric_flags(tool: str) -> list[argparse.Action]:
    return [a for a in actions_of(tool) if hasattr(a.type, "kind")]


@pytest.mark.parametrize("tool", list(TOOLS))
def test_every_numeric_flag_has_a_kind(tool: str) -> None:
    plain = [a.option_strings[0] for a in actions_of(tool) if a.type in (int, float) and not a.choices]
    assert not plain, f"{tool}: {plain} take any number; give them a type of facetorch.cli.common"
    assert numeric_flags(tool), f"{tool} has no numeric flag with a kind"


def _check(tool: str, action: argparse.Action, text: str, capsys: pytest.CaptureFixture) -> None:
    build, args = TOOLS[tool]
    flag = action.option_strings[0]
    values = [f"{flag}={text}"] if action.nargs in (None, 1) else [flag, *([text] * int(action.nargs))]
    capsys.readouterr()
    try:
        parsed = build().parse_args([*args, *values])
    except SystemExit as exit_info:
        assert exit_info.code == 2
        err = capsys.readouterr().err
        assert flag in err or "expected" in err, err  # argparse names the flag ("argument --every: ...")
        return
    value = getattr(parsed, action.dest)
    items = value if isinstance(value, list) else [value]
    assert all(action.type.kind.contains(item) for item in items), (flag, text, value)


@pytest.mark.parametrize("tool", list(TOOLS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_numbers_for_every_flag_are_refused_or_of_their_kind(tool: str, data: st.DataObject,
                                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    flags = numeric_flags(tool)
    if not flags:
        return
    action = data.draw(st.sampled_from(flags), label="flag")
    _check(tool, action, data.draw(TYPED, label="value"), capsys)


NUMBERS = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 0.5, 1.0, 1.5, math.nan, math.inf, True]),
)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(DATA_VALUES)), value=NUMBERS)
def test_data_section_numbers_are_refused_by_key_or_of_their_kind(name: str, value: Any) -> None:
    try:
        FaceDataModule(**{name: value})  # face_crops' built-in data: nothing is read until the splits are asked for
    except ValueError as error:
        assert f"data.{name}" in str(error)
    else:
        assert DATA_VALUES[name].contains(value)


TASKS = {  # a tiny task of each kind, and the numbers it takes
    FaceClassifierTask: {"cfg": [4, "M"], "hidden": 4},
    EmbeddingTask: {"backbone": "tiny", "embedding_dim": 8},
    FaceDetectorTask: {"backbone": "tiny", "hidden": 8},
}


@pytest.mark.parametrize("task", list(TASKS), ids=lambda t: t.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_model_section_numbers_are_refused_by_key_or_of_their_kind(task: type, data: st.DataObject) -> None:
    import inspect

    taken = {n for c in task.__mro__ if "__init__" in vars(c) for n in inspect.signature(c.__init__).parameters}
    # num_classes comes from the data (a link no config can set): a huge one is a data set's size, not a typo.
    name = data.draw(st.sampled_from(sorted(set(MODEL_VALUES) & taken - {"num_classes"})), label="name")
    value = data.draw(NUMBERS, label="value")
    try:
        task(**{**TASKS[task], name: value})
    except ValueError as error:
        assert f"model.{name}" in str(error), str(error)
    else:
        assert MODEL_VALUES[name].contains(value)


@given(kind=st.sampled_from([ranges.POSITIVE_INT, ranges.NONNEGATIVE_INT, ranges.POSITIVE, ranges.NONNEGATIVE,
                             ranges.FRACTION, ranges.FRACTION_BELOW_ONE, ranges.POSITIVE_FRACTION, ranges.OPEN_FRACTION,
                             ranges.COSINE, ranges.IMAGE_SIDE, ranges.LAYER_WIDTH, OPSET]),
       value=NUMBERS)  # fmt: skip
def test_a_kind_refuses_exactly_what_it_does_not_contain_and_says_its_range(kind: ranges.Kind, value: Any) -> None:
    if kind.contains(value):
        assert kind.check(value, "--x") is value
        assert math.isfinite(value) and not isinstance(value, bool)
    else:
        with pytest.raises(ValueError, match=r"^--x must be an? (integer|number) .*, got "):
            kind.check(value, "--x")
