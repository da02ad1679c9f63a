"""Data parallelism (spikeacc.distributed): two gloo processes on the CPU follow one
process's trajectory on the same global batches, for every method; ASF-BP's k is the
one-process k; a rank that fails stops the other with a clear error; torchrun end to end.

Exactness: float64, the two-process weights equal the one-process weights to atol 1e-10
after three Adam steps (the only difference is the order of float additions in the
gradient sums)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from spikeacc import distributed, methods
from spikeacc.models import MLP

REPO = Path(__file__).resolve().parents[1]
STEPS, BATCH = 3, 7  # an odd global batch: shards of 4 and 3 samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batches():
    generator = torch.Generator().manual_seed(0)
    return [(torch.rand(BATCH, 6, generator=generator, dtype=torch.float64) * 1.5,
             torch.randint(0, 3, (BATCH,), generator=generator)) for _ in range(STEPS)]


def train_steps(name: str, group: distributed.Group) -> dict:
    """STEPS Adam steps of method ``name`` on this rank's shards; the weights and the ASF k."""
    torch.manual_seed(1)
    net = MLP(6, [5], 3).double()
    method = methods.get(name, T=4)
    distributed.attach(method, net, group)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for x, y in global_batches():
        part = group.shard(len(y))
        group.set_batch(len(y[part]), len(y))
        method.step(net, optimizer, x[part], y[part])
    stats = method.stats() if hasattr(method, "stats") else []
    return {"weights": {n: p.detach().clone() for n, p in net.named_parameters()}, "stats": stats}


def _set_env(rank: int, world_size: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def _every_method(rank: int, world_size: int, port: int, out: str) -> None:
    _set_env(rank, world_size, port)
    group = distributed.setup()
    results = {name: train_steps(name, group) for name in methods.names()}
    if group.is_main:
        torch.save(results, out)
    distributed.shutdown()


def test_two_processes_equal_one_process_for_every_method(tmp_path):
    out = tmp_path / "two.pt"
    mp.spawn(_every_method, args=(2, free_port(), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    single = distributed.Group()
    for name in methods.names():
        one = train_steps(name, single)
        for param in one["weights"]:
            torch.testing.assert_close(two[name]["weights"][param], one["weights"][param], rtol=0, atol=1e-10,
                                       msg=f"{name} {param}")
        if name == "asf":  # k from sums over both shards: the one-process k
            assert [s["k"] for s in two[name]["stats"]] == pytest.approx([s["k"] for s in one["stats"]], abs=1e-12)
            assert [s["fit_error"] for s in two[name]["stats"]] == pytest.approx(
                [s["fit_error"] for s in one["stats"]], abs=1e-12)
    moved = train_steps("saf-f", single)["weights"]["1.weight"]
    torch.manual_seed(1)
    assert not torch.allclose(moved, MLP(6, [5], 3).double()[1].weight)  # the steps did move the weights


def test_shards_are_disjoint_cover_the_batch_and_differ_by_at_most_one():
    for n in (7, 8, 2, 0):
        parts = [distributed.Group(rank, 3).shard(n) for rank in range(3)]
        covered = [i for part in parts for i in range(n)[part]]
        assert covered == list(range(n))
        sizes = [len(range(n)[part]) for part in parts]
        assert max(sizes) - min(sizes) <= 1


def _fails_on_rank_1(rank: int, world_size: int, port: int, out: str) -> None:
    _set_env(rank, world_size, port)
    group = distributed.setup(timeout_s=20)
    try:
        if rank == 1:
            raise SystemExit(1)  # this rank stops before the first reduction
        started = time.perf_counter()
        try:
            train_steps("saf-f", group)
        except distributed.DistributedError as err:
            Path(out).write_text(json.dumps({"message": str(err), "seconds": time.perf_counter() - started}))
    except Exception:  # noqa: BLE001  (report anything else to the test)
        Path(out).write_text(json.dumps({"message": traceback.format_exc(), "seconds": -1}))


def test_a_rank_that_stops_makes_the_other_stop_with_a_clear_error(tmp_path):
    out = tmp_path / "rank0.json"
    context = mp.start_processes(_fails_on_rank_1, args=(2, free_port(), str(out)), nprocs=2, join=False)
    rank0, rank1 = context.processes
    rank1.join(60)
    rank0.join(60)  # joined by hand: spawn's own join would kill rank 0 as soon as rank 1 fails
    assert rank1.exitcode == 1 and rank0.exitcode == 0
    report = json.loads(out.read_text())
    assert report["message"].startswith("rank 0: lost the other processes"), report["message"]
    assert "\n" not in report["message"] and 0 <= report["seconds"] < 25  # no hang beyond the timeout


TINY = ["--dataset", "digits", "--epochs", "2", "--T", "2", "--limit-train", "250", "--limit-test", "100",
        "--hidden", "16", "--batch-size", "25", "--threads", "1"]


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "spikeacc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)


def test_torchrun_trains_like_one_process_and_resume_checks_the_world_size(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    done = torchrun("train", "--method", "asf", *TINY, "--out", str(two))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 2/2") == 1  # rank 0 alone reports
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train_samples_per_rank"] == [260, 240]  # 13 + 12 of each batch of 25, 20 batches
    from spikeacc import cli
    assert cli.main(["train", "--method", "asf", *TINY, "--out", str(one)]) == 0
    single = json.loads((one / "metrics.json").read_text())
    assert single["world_size"] == 1 and single["train_samples_per_rank"] == [500]
    state_two, state_one = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (two, one))
    for name, value in state_one["model"].items():
        torch.testing.assert_close(state_two["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)  # float32
    for a, b in zip(metrics["history"], single["history"]):
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.011)  # a rounding flip may move one sample
    mismatch = torchrun("train", "--method", "asf", *TINY, "--epochs", "3", "--out", str(one), "--resume")
    assert mismatch.returncode != 0
    lines = [line for line in mismatch.stderr.splitlines() if "spikeacc: error:" in line]
    assert lines == [f"spikeacc: error: --resume: {one / 'checkpoint.pt'} was trained by 1 process(es), this run "
                     "has 2; resume with the same number (torchrun --nproc_per_node)"], mismatch.stderr  # rank 0 alone
