"""Benchmark plumbing: the conditions every result carries, inference rows, and torch.compile against eager."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facetorch.bench import conditions
from facetorch.cli.benchmark import benchmark


def test_conditions_name_the_machine_and_warn_when_it_was_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conditions, "load_average", lambda: 0.1)
    quiet = conditions.finish_conditions(conditions.start_conditions())
    for key in ("cpu", "cpu_flags", "cores", "torch_threads", "torch", "load_average_start", "load_average_end"):
        assert key in quiet, key
    assert "warning" not in quiet
    busy = conditions.start_conditions()
    monkeypatch.setattr(conditions, "load_average", lambda: 8.0 + busy["torch_threads"])
    assert "other work shared the machine" in conditions.finish_conditions(busy)["warning"]


def test_the_conditions_come_with_every_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facetorch.cli import benchmark as benchmark_cli

    monkeypatch.setattr(benchmark_cli, "measure", lambda args: {"task": args.task, "img_s": 1.0})
    output = tmp_path / "bench.json"
    result = benchmark(["--task", "face_vgg", "--output", str(output)])
    assert result["conditions"]["load_average_end"] is not None and result["conditions"]["torch_threads"] >= 1
    assert json.loads(output.read_text()) == result


@pytest.mark.slow
def test_inference_rows_compare_facetorch_with_a_plain_loop_in_both_precisions() -> None:
    from facetorch.bench.inference import inference_throughput
    from facetorch.bench.training import face_vgg_setup

    setup = face_vgg_setup(batch_size=4, steps=2, data_root=None)
    result = inference_throughput(setup, "cpu", (1, 3), repeats=1, calls={1: 2, 3: 1})
    for precision in ("fp32", "bf16"):
        for batch in (1, 3):
            assert result[f"infer_{precision}_b{batch}_facetorch_img_s"] > 0
            assert result[f"infer_{precision}_b{batch}_facetorch_vs_plain"] > 0


@pytest.mark.slow
def test_compile_is_measured_against_eager_with_the_same_outputs() -> None:
    from facetorch.bench.training import compiled_output_difference, face_vgg_setup

    setup = face_vgg_setup(batch_size=4, steps=2, data_root=None)
    assert compiled_output_difference(setup, setup.batches[0][0].device) < 1e-4


def test_the_gpu_suite_measures_every_task_on_generated_data_and_keeps_going_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facetorch.bench import suite

    monkeypatch.setattr(suite, "SHARED_DATA", Path("/nonexistent"))  # as on a bare GPU machine
    calls: dict[str, dict] = {}

    def fake_run(task: str, batch_size: int, **kwargs: object) -> dict:
        root = kwargs["data_root"]
        calls[task] = {"batch_size": batch_size, "files": len(list(Path(root).rglob("*.*"))) if root else 0, **kwargs}
        if task == "identity":
            raise RuntimeError("CUDA out of memory")
        return {"img_s": 1.0}

    monkeypatch.setattr(suite, "run", fake_run)
    monkeypatch.setattr(suite, "run_gradcam", lambda *args: {"img_s": 2.0})
    result = suite.run_all("cpu", repeats=1, batch_size=4, with_tests=False, compiled=("embedding",))
    assert set(calls) == {"face_vgg", "identity", "embedding", "detector"}
    assert result["identity"]["error"] == "RuntimeError: CUDA out of memory" and result["detector"]["img_s"] == 1.0
    assert calls["embedding"]["compile"] and not calls["face_vgg"]["compile"]
    for task in ("identity", "embedding", "detector"):  # generated folders, since there is no shared data
        assert calls[task]["files"] > 50, calls[task]
    assert calls["face_vgg"]["data_root"] is None and result["gradcam"]["img_s"] == 2.0


def test_the_gallery_benchmark_reports_every_size_against_exact_search_and_the_npz_gallery(tmp_path: Path) -> None:
    from facetorch.cli.gallery_bench import run_gallery_benchmark

    row = run_gallery_benchmark([300], legacy=True, work_root=str(tmp_path))["sizes"][0]
    ours = row["ours"]
    assert ours["index"]["kind"] == "flat" and ours["recall_at_1_known"] == ours["recall_at_1_strangers"] == 1.0
    assert ours["newcomer_found"] and ours["peak_mb_reopened"] > 0 and ours["file_mb"] > 0
    assert set(row["identify_batch_64_ms"]) == {"ours", "numpy_matmul", "faiss_index_flat_ip", "ours_index_search_only"}
    assert row["npz_gallery"]["people"] == 300 and row["identify_batch_64_ratio_vs_npz_gallery"] > 0


def test_the_gallery_comparison_sweeps_graph_candidates(tmp_path: Path) -> None:
    from facetorch.bench.gallery import Population, compare
    from facetorch.recognition import open_gallery

    population = Population(300)
    probes, _ = population.probes(100, 20)
    with open_gallery(tmp_path / "g.db", create=True, dim=128, fingerprint="synthetic", exact_rows=100) as gallery:
        for names, rows, files in population.blocks():
            gallery.add_many(names, rows, files)
        compared = compare(gallery, population, probes, repeats=1, ef_values=(4, 64))
        assert gallery.ef_search is None  # put back
    few, many = compared["ef_sweep"]
    assert (few["ef_search"], many["ef_search"]) == (4, 64) and len(few["hits"]) == len(probes)
    assert sum(many["hits"]) >= sum(few["hits"]) and many["identify_batch_64_ms"] > 0
