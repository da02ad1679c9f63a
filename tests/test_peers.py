"""`python -m benchmarks peers --quick` runs with and without SpikingJelly and snnTorch
installed (CI has neither), skips a missing peer with one line, and never times a peer
whose gradients disagree with spikeacc's."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import peers
from spikeacc import MLP

REPO = Path(__file__).resolve().parents[1]
ALWAYS = {("saf-f vs ann", T, library) for T in (4, 8) for library in ("spikeacc", "torch")} | {
    ("online memory", T, "spikeacc") for T in (4, 32)}


def run_quick(out: Path, *extra_path: Path) -> subprocess.CompletedProcess:
    path = [*map(str, extra_path), str(REPO / "src"), str(REPO)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    cmd = [sys.executable, "-m", "benchmarks", "peers", "--quick", "--out", str(out)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_quick_run_checks_installed_peers_and_writes_every_table(tmp_path):
    done = run_quick(tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads((tmp_path / "peers.json").read_text())
    seen = {(r["comparison"], r["T"], r["library"]) for r in payload["results"]}
    assert ALWAYS <= seen
    assert set(payload["peers"]) | set(payload["missing"]) == set(peers.PEERS)
    checks = [r["check"] for r in payload["results"] if r["library"] in peers.PEERS]
    assert all(check and check["agrees"] for check in checks), checks
    assert {r["library"] for r in payload["results"] if "step_median_s" in r} >= {"spikeacc", "torch"}
    assert len(payload["targets"]) + len(payload["unmeasured"]) == len(peers.RATIOS)
    verdicts = [line for line in done.stdout.splitlines() if "PASS " in line or "MISS " in line]
    assert len(verdicts) == len(payload["targets"]) >= 4  # SAF-F vs ANN and the three online memories
    markdown = (tmp_path / "peers.md").read_text()
    assert f"Machine: {payload['machine']['cpu']}" in markdown and "## Conventions" in markdown


def test_missing_peers_are_skipped_with_one_line(tmp_path):
    hidden = tmp_path / "hidden"
    for library in peers.PEERS:
        (hidden / library).mkdir(parents=True)
        (hidden / library / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    done = run_quick(tmp_path / "out", hidden)
    assert done.returncode == 0, done.stderr
    for library in peers.PEERS:
        assert f"[peers] skip {library}: cannot import it (hidden by the test); pip install --no-deps {library}" \
            in done.stdout
    payload = json.loads((tmp_path / "out" / "peers.json").read_text())
    assert payload["peers"] == {} and set(payload["missing"]) == set(peers.PEERS)
    assert {(r["comparison"], r["T"], r["library"]) for r in payload["results"]} >= ALWAYS
    assert not any(r["library"] in peers.PEERS for r in payload["results"])
    # at --quick sizes (~0.1 MiB) the CPU profiler can miss every byte of an online method's
    # T = 4 memory (stale sizes of frees); such a ratio is reported unmeasured, not divided by 0
    reasons = {line.split(": not measured")[0]: line for line in payload["unmeasured"]}
    with_peer = {ratio.name for ratio in peers.RATIOS if {ratio.numerator[3], ratio.denominator[3]} & set(peers.PEERS)}
    assert with_peer <= set(reasons) and all("not installed" in reasons[name] for name in with_peer)
    assert all("measured 0 bytes" in reasons[name] for name in set(reasons) - with_peer)
    assert "spikingjelly: hidden by the test" in (tmp_path / "out" / "peers.md").read_text()


def test_a_peer_that_disagrees_is_reported_and_not_timed(capsys):
    torch.manual_seed(0)
    net = MLP(784, [8], 10, sample_shape=(1, 28, 28))
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    other = copy.deepcopy(net)
    with torch.no_grad():
        other[3].bias[0] += 1.0  # another network: another loss
    reference = peers.spikeacc_method("bptt", net, 4, x, y)
    other_loss = peers.spikeacc_method("bptt", other, 4, x, y).loss_and_grad
    impostor = peers.Contender("spikingjelly", "bptt", other, other_loss)
    group = peers.Group("bptt", "mlp", 4, 3, [reference, impostor])
    records = peers.measure(group, torch.device("cpu"), repeats=1, warmup=0)
    assert "DISAGREE: not timed" in capsys.readouterr().out
    assert "step_median_s" in records[0] and not records[1]["check"]["agrees"]
    assert not {"step_median_s", "peak_step_bytes", "peak_grad_bytes"} & set(records[1])
    _, unmeasured = peers.targets(records)
    assert "BPTT step, MLP T=4, spikeacc / SpikingJelly: not measured (spikingjelly bptt disagrees with spikeacc)" \
        in unmeasured
