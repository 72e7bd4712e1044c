"""The margin softmax head (ArcFace / CosFace) and its centres sharded over ranks (Partial FC)."""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facetorch.models.margin import MarginSoftmaxHead, class_range, init_centres

DIM, CLASSES = 8, 11


def batch(seed: int = 0, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, DIM, generator=generator, dtype=torch.float64), torch.randint(CLASSES, (size,), generator=generator)


def reference_loss(
    x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, kind: str, margin: float, scale: float
) -> torch.Tensor:
    """The textbook loss: scaled cosines, the margin on the true class, softmax cross-entropy."""
    cosine = F.normalize(x, dim=1) @ F.normalize(weight, dim=1).T
    target = cosine.gather(1, labels[:, None])[:, 0]
    if kind == "arcface":
        theta = torch.acos(target.clamp(-1, 1))
        modified = torch.where(theta + margin <= math.pi, torch.cos(theta + margin), target - margin * math.sin(margin))
    else:
        modified = target - margin
    logits = cosine.scatter(1, labels[:, None], modified[:, None])
    return F.cross_entropy(scale * logits, labels)


@pytest.mark.parametrize(("kind", "margin"), [("arcface", 0.5), ("cosface", 0.35), ("arcface", 3.0)])
def test_unsharded_head_is_the_textbook_loss(kind: str, margin: float) -> None:
    x, labels = batch()
    head = MarginSoftmaxHead(DIM, CLASSES, kind, margin, scale=16.0).double()  # type: ignore[arg-type]
    weight = head.weight.detach().clone().requires_grad_(True)
    ours_x, ref_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    loss = head(ours_x, labels)
    expected = reference_loss(ref_x, labels, weight, kind, margin, 16.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    loss.backward()
    expected.backward()
    assert torch.allclose(ours_x.grad, ref_x.grad, atol=1e-12) and torch.allclose(head.weight.grad, weight.grad, atol=1e-12)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_unsharded_head_matches_pytorch_metric_learning(kind: str) -> None:
    from pytorch_metric_learning import losses

    x, labels = batch(1, 32)
    x = x.float()
    head = MarginSoftmaxHead(DIM, CLASSES, kind, scale=64.0)  # type: ignore[arg-type]
    if kind == "arcface":
        pml = losses.ArcFaceLoss(CLASSES, DIM, margin=math.degrees(0.5), scale=64.0)
    else:
        pml = losses.CosFaceLoss(CLASSES, DIM, margin=0.35, scale=64.0)
    pml.W.data = head.weight.detach().T.clone()  # pytorch-metric-learning stores (D, C)
    assert head(x, labels).item() == pytest.approx(pml(x, labels).item(), rel=1e-5)


def test_centres_do_not_depend_on_the_sharding() -> None:
    full = init_centres(0, 10_000, 4, seed=3)
    for world in (1, 2, 3, 7):
        parts = [init_centres(*class_range(10_000, world, rank), 4, seed=3) for rank in range(world)]
        assert torch.equal(torch.cat(parts), full)
    assert [class_range(10, 3, r) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


def test_sampled_centres_keep_the_batch_identities() -> None:
    head = MarginSoftmaxHead(DIM, 1000, sample_rate=0.1)
    labels = torch.tensor([5, 17, 17, 999, 0, 420])
    torch.manual_seed(0)
    loss = head(torch.randn(6, DIM), labels)
    assert torch.isfinite(loss) and head.last_stats["num_sampled"].item() == 100
    index, column = head._sample(labels)
    assert len(index) == 100 and torch.equal(index[column], labels)  # every label's centre is among them
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1000\)"):
        head(torch.randn(1, DIM), torch.tensor([1000]))
    with pytest.raises(ValueError, match="sample_rate"):
        MarginSoftmaxHead(DIM, 10, sample_rate=0.0)


# --------------------------------------------------------------------------------------------
# two processes (gloo, CPU): the sharded head gives the unsharded loss and gradients
# --------------------------------------------------------------------------------------------

GLOBAL = 12  # rank 0 holds the first 7 samples, rank 1 the other 5 (ranks may hold different counts)
SPLIT = 7
KINDS = ("arcface", "cosface")


def _rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for kind in KINDS:  # both kinds in one pair of processes: starting them is most of the test's time
            _rank_step(rank, f"{out}.{kind}", kind)
    finally:
        torch.distributed.destroy_process_group()


def _rank_step(rank: int, out: str, kind: str) -> None:
    x, labels = batch(2, GLOBAL)
    mine = slice(0, SPLIT) if rank == 0 else slice(SPLIT, GLOBAL)
    local = x[mine].clone().requires_grad_(True)
    head = MarginSoftmaxHead(DIM, CLASSES, kind, scale=16.0, world_size=2, rank=rank, seed=5).double()  # type: ignore[arg-type]
    loss = head(local, labels[mine])
    loss.backward()
    full = head.full_weight()
    grads = [torch.zeros(GLOBAL, DIM, dtype=torch.float64) for _ in range(2)]
    padded = torch.zeros(GLOBAL, DIM, dtype=torch.float64)
    padded[: len(local)] = local.grad
    torch.distributed.all_gather(grads, padded)
    weight_grads = [None, None]
    torch.distributed.all_gather_object(weight_grads, head.weight.grad)
    if rank == 0:
        torch.save({"loss": [loss.item()], "grad": torch.cat([grads[0][:SPLIT], grads[1][: GLOBAL - SPLIT]]),
                    "weight": full, "weight_grad": torch.cat(weight_grads),
                    "accuracy": head.last_stats["accuracy"].item()}, out)  # fmt: skip
    else:
        torch.save({"loss": [loss.item()]}, out + ".1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_give_the_unsharded_loss_and_gradients(tmp_path: Path) -> None:
    out, port = str(tmp_path / "result.pt"), _free_port()
    # spawn, not fork: a fork of this process, whose OpenMP threads have already run, can hang
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_rank_main, args=(rank, port, out)) for rank in range(2)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [worker.exitcode for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    for kind in KINDS:
        _check_two_ranks(f"{out}.{kind}", kind)


def _check_two_ranks(out: str, kind: str) -> None:
    result, other = torch.load(out), torch.load(out + ".1")
    x, labels = batch(2, GLOBAL)
    single = MarginSoftmaxHead(DIM, CLASSES, kind, scale=16.0, seed=5).double()  # type: ignore[arg-type]
    assert torch.equal(result["weight"], single.weight.detach())  # the gathered shards are the whole matrix
    x.requires_grad_(True)
    loss = single(x, labels)
    loss.backward()
    assert result["loss"][0] == pytest.approx(loss.item(), rel=1e-12)
    assert other["loss"][0] == pytest.approx(loss.item(), rel=1e-12)
    # Each rank's embedding gradient is twice the global one: DDP halves it when it averages the backbone.
    assert torch.allclose(result["grad"], 2 * x.grad, atol=1e-12)
    assert torch.allclose(result["weight_grad"], single.weight.grad, atol=1e-12)
    assert result["accuracy"] == pytest.approx(single.last_stats["accuracy"].item())


def test_a_sharded_checkpoint_loads_into_one_process_and_back() -> None:
    single = MarginSoftmaxHead(DIM, CLASSES, seed=1)
    state = {"weight": init_centres(0, CLASSES, DIM, seed=9)}
    single.load_state_dict(state)
    assert torch.equal(single.weight.detach(), state["weight"])
    shard = MarginSoftmaxHead(DIM, CLASSES, world_size=2, rank=1, seed=1)
    shard.load_state_dict({"weight": state["weight"].clone()})  # the whole matrix: the shard keeps its rows
    assert torch.equal(shard.weight.detach(), state["weight"][class_range(CLASSES, 2, 1)[0] :])
    assert np.isclose(float(shard.weight.detach().std()), float(state["weight"][5:].std()))
