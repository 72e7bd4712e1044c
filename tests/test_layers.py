"""The house: rooms that show the layers, imports that only point down, one convention for tools.

The import check reads every module's source (module-level and function-level imports alike),
so a lazy import inside a function cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "facetorch"

# Floors from the ground up; a module may import its own room, and any room on a lower floor.
# (Rooms on one floor are independent of each other, except the pure modules of floor 0, which
# are allowed to use each other: reports writes through io.)
FLOORS: list[set[str]] = [
    {"io", "boxes", "losses", "evaluation", "reports", "ranges", "__init__"},
    {"models"},  # plain nn.Modules and their weight files (the data pipeline may run one: 5-point landmarks)
    {"data"},
    {"explain"},
    {"tasks", "callbacks", "baselines"},
    {"inference", "bench"},
    {"recognition"},  # faces in the wild: the gallery's stores, the pipeline, streams, tracking, clustering
    {"serve"},  # the HTTP service over recognition
    {"cli"},
]
MAX_MODULE_LINES = 500


def room_of(module: str) -> str:
    """``facetorch.data.crops`` -> ``data``; ``facetorch.io`` -> ``io``; ``facetorch`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(room: str) -> int:
    for floor, rooms in enumerate(FLOORS):
        if room in rooms:
            return floor
    raise AssertionError(f"room {room!r} is on no floor of the house; add it to FLOORS")


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def facetorch_imports(path: Path) -> set[str]:
    """Every ``facetorch...`` module a file imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "facetorch"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                package = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "facetorch":
                continue
            found.add(target)
            if target == "facetorch":  # from facetorch import io, evaluation
                found |= {f"facetorch.{alias.name}" for alias in node.names}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_top_level_holds_at_most_eight_modules_and_the_rooms_exist() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    for room in ("data", "models", "tasks", "explain", "callbacks", "inference", "baselines", "bench", "recognition", "cli"):
        assert (PACKAGE / room / "__init__.py").is_file(), room
    # one callback per file, as Lightning's own callbacks/
    callbacks = {p.stem for p in (PACKAGE / "callbacks").glob("*.py")}
    assert callbacks == {"__init__", "checkpoint", "freeze_stages", "freeze_unfreeze", "gradcam_logger", "keep_start",
                         "progress", "throughput"}  # fmt: skip


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_only_point_down(path: Path) -> None:
    here = module_name(path)
    room = room_of(here)
    floor = floor_of(room)
    upward = []
    for target in sorted(facetorch_imports(path)):
        other = room_of(target)
        if other == room or (floor == 0 and floor_of(other) == 0):
            continue
        if floor_of(other) >= floor:
            upward.append(f"{target} (floor {floor_of(other)})")
    assert not upward, f"{here} (floor {floor}) imports {upward}"


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_no_module_is_longer_than_500_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module_name(path)} has {lines} lines: split it by what its parts do"


def assert_acyclic(graph: dict[str, set[str]]) -> None:
    """Fail with the first import cycle of ``graph`` (node -> the nodes it imports), as a trail."""
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_import_cycle_between_rooms() -> None:
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        room = room_of(module_name(path))
        graph.setdefault(room, set()).update(room_of(t) for t in facetorch_imports(path) if room_of(t) != room)
    assert_acyclic(graph)


def test_no_import_cycle_between_modules() -> None:
    """Inside a room too, two files never import each other, directly or around a circle.

    Package faces (``__init__.py``) only re-export, so they are left out of the graph.
    """
    names = {module_name(p) for p in MODULES if p.name != "__init__.py"}
    graph = {module_name(p): {t for t in facetorch_imports(p) if t in names} - {module_name(p)}
             for p in MODULES if p.name != "__init__.py"}  # fmt: skip
    assert_acyclic(graph)


def test_no_checkpoint_is_unpickled_with_code() -> None:
    offenders = [str(p.relative_to(REPO)) for p in MODULES if "weights_only=False" in p.read_text(encoding="utf-8")]
    assert not offenders


def test_no_module_points_to_a_design_file_it_does_not_ship() -> None:
    offenders = [str(p.relative_to(REPO)) for p in MODULES if "DESIGN.md" in p.read_text(encoding="utf-8")]
    assert not offenders


def test_tools_are_one_line_shims() -> None:
    for tool in sorted((REPO / "tools").glob("*.py")):
        code = [line for line in ast.unparse(ast.parse(tool.read_text())).splitlines() if line.strip()]
        imports = [line for line in code if line.startswith(("from ", "import "))]
        assert len(imports) == 1 and imports[0].startswith("from facetorch.cli."), (tool.name, imports)


def test_the_deprecated_module_paths_are_gone() -> None:
    for name in ("finetuning", "checkpointing"):
        assert not (PACKAGE / f"{name}.py").exists(), f"facetorch.{name} was removed in 0.2.0 (CHANGELOG.md)"


def help_text(tool: str, sub: list[str], capsys: pytest.CaptureFixture) -> str:
    """What ``tools/<tool> [sub] --help`` prints, run in this process (each shim calls the module's ``main``)."""
    import importlib

    shim = ast.parse((REPO / "tools" / tool).read_text())
    module = next(node.module for node in shim.body if isinstance(node, ast.ImportFrom))
    main = importlib.import_module(module).__dict__[next(
        node.names[0].name for node in shim.body if isinstance(node, ast.ImportFrom)
    )]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main([*sub, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("tool, sub", [("train.py", []), ("evaluate.py", []), ("explain.py", []), ("detect.py", []),
                                       ("export.py", []), ("gallery.py", ["enroll"]), ("gallery.py", ["identify"]),
                                       ("gallery.py", ["verify"]), ("gallery.py", ["evaluate"]), ("serve.py", [])])
def test_every_tool_that_reads_a_checkpoint_takes_ckpt_path(tool: str, sub: list[str], capsys: pytest.CaptureFixture) -> None:
    text = help_text(tool, sub, capsys)
    assert "--ckpt_path" in text and "--ckpt " not in text


@pytest.mark.parametrize("tool, sub", [("evaluate.py", []), ("explain.py", []), ("detect.py", []), ("export.py", []),
                                       ("gallery.py", ["identify"]),
                                       ("gallery.py", ["split"]), ("baselines.py", []), ("benchmark.py", []),
                                       ("prepare_crops.py", []), ("prepare_boxes.py", [])])
def test_every_tool_that_writes_takes_output_and_a_plain_overwrite_flag(
    tool: str, sub: list[str], capsys: pytest.CaptureFixture
) -> None:
    text = help_text(tool, sub, capsys)
    assert "--output" in text and "--overwrite" in text
    assert "--overwrite OVERWRITE" not in text and "--overwrite {true,false}" not in text  # a flag, no value
    flags = {word.rstrip(",") for word in text.replace("[", " ").replace("]", " ").split() if word.startswith("--")}
    hyphenated = sorted(flag for flag in flags if "." not in flag and "-" in flag[2:])
    assert not hyphenated, hyphenated


def test_a_test_that_tries_to_download_fails() -> None:
    import urllib.request

    import torch.hub

    with pytest.raises(AssertionError, match="tests never download"):  # conftest's DownloadAttempted
        torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/resnet18-f37072fd.pth")
    with pytest.raises(AssertionError, match="tests never download"):
        urllib.request.urlopen("https://pypi.org")
