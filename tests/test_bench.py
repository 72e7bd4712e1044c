"""Benchmark plumbing: the conditions every result carries, inference rows, and torch.compile against eager."""

from __future__ import annotations

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


@pytest.mark.slow
def test_inference_rows_and_the_conditions_come_with_the_result(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = benchmark(["--task", "face_vgg", "--batch_size", "4", "--steps", "3", "--warmup", "1", "--repeats", "1",
                        "--inference", "--inference_batch_sizes", "1,3", "--output", str(output)])  # fmt: skip
    for precision in ("fp32", "bf16"):
        for batch in (1, 3):
            assert result[f"infer_{precision}_b{batch}_facetorch_img_s"] > 0
            assert result[f"infer_{precision}_b{batch}_facetorch_vs_plain"] > 0
    assert result["conditions"]["load_average_end"] is not None and output.is_file()


@pytest.mark.slow
def test_compile_is_measured_against_eager_with_the_same_outputs() -> None:
    from facetorch.bench.training import compiled_output_difference, face_vgg_setup

    setup = face_vgg_setup(batch_size=4, steps=2, data_root=None)
    assert compiled_output_difference(setup, setup.batches[0][0].device) < 1e-4


@pytest.mark.slow
def test_the_gpu_suite_runs_end_to_end_on_generated_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from facetorch.bench import suite

    monkeypatch.setattr(suite, "SHARED_DATA", Path("/nonexistent"))  # as on a bare GPU machine
    result = suite.run_all("cpu", repeats=1, batch_size=4, with_tests=False, tasks=("face_vgg", "detector"), steps=3,
                           inference_batch_sizes=(1,), compiled=(), gradcam=(1, 32))  # fmt: skip
    for task in ("face_vgg", "detector", "gradcam"):
        assert "error" not in result[task], result[task]
    assert result["detector"]["data_root"] != "built-in" and result["face_vgg"]["infer_fp32_b1_facetorch_img_s"] > 0
