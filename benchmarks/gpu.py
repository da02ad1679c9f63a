"""Every GPU figure from one command: ``python -m benchmarks gpu`` on a machine with CUDA.

1. ``pytest tests/test_cuda.py`` (CUDA against CPU parity, the compiled Triton kernels,
   SAF's Triton neuron steps and the spikes kept as bits);
2. saf_family, compiled, single_spike and floor with ``--device cuda`` (the SAF-family
   ratios and peak memory by torch.cuda; compiled against eager; single-spike at T = 128,
   batch 32, against the v1 and v2 sequential baselines, and Blocks at T = 512, R = 4;
   issue 19's SAF-F / ANN, BPTT / SpikingJelly and snnTorch, long windows);
3. the fused LIF kernel (``spikeacc.kernels``) against SpikingJelly's Triton LIF, if
   installed, forward + backward at T = 8 and 32, float32 and bfloat16.

Results go to <output dir>/gpu/ (``--update-results``: benchmarks/results/gpu/), with a
summary gpu.md naming the GPU. Without CUDA it says so and measures nothing.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from . import common

NAME = "gpu"
REPO = Path(__file__).resolve().parents[1]
KERNEL_SHAPES = [(T, 64, 4096) for T in (8, 32)]  # [T, B, N]


def build_parser():
    return common.base_parser(NAME, __doc__.split("\n\n")[0])


def run_tests() -> str:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", str(REPO / "tests" / "test_cuda.py")],
                          cwd=REPO, capture_output=True, text=True)
    return (done.stdout.strip().splitlines() or ["(no output)"])[-1]


def run_benchmarks(out: Path, quick: bool) -> list[str]:
    from . import compiled, floor, saf_family, single_spike

    extra = ["--device", "cuda", "--out", str(out)] + (["--quick"] if quick else [])
    return [f"{module.NAME}: exit {module.main(extra)}" for module in (saf_family, compiled, single_spike, floor)]


def kernel_step_seconds(step, repeats: int) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return common.median(times)


def compare_lif_kernels(repeats: int) -> list[list[str]]:
    """spikeacc's fused LIF against SpikingJelly's Triton LIF (forward + backward)."""
    from spikeacc import LIF

    try:
        from spikingjelly.activation_based import neuron as sj_neuron
    except ImportError:
        sj_neuron = None
    rows = []
    for T, B, N in KERNEL_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            current = torch.rand(T, B, N, device="cuda", dtype=dtype).requires_grad_()
            lif = LIF()
            ours = kernel_step_seconds(lambda: lif.run(current).sum().backward(), repeats)
            theirs = "not installed"
            if sj_neuron is not None:
                node = sj_neuron.LIFNode(tau=2.0, decay_input=False, v_reset=None, step_mode="m",
                                         backend="triton").to("cuda")

                def sj_step():
                    node.reset()
                    node(current).sum().backward()
                theirs = f"{kernel_step_seconds(sj_step, repeats) * 1e3:.3f}"
            rows.append([T, B * N, str(dtype).replace("torch.", ""), f"{ours * 1e3:.3f}", theirs])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print(f"[{NAME}] no CUDA device: nothing measured (the README's GPU figures stay 'not measured yet')")
        return 0
    out = common.output_dir(args) / "gpu"
    out.mkdir(parents=True, exist_ok=True)
    machine = common.machine(torch.device("cuda"))
    tests = run_tests()
    benchmarks = run_benchmarks(out, args.quick)
    kernels = compare_lif_kernels(args.repeats or (3 if args.quick else 20))
    text = "\n".join([
        f"# GPU figures on {machine['gpu']}", "", f"Machine: {common.machine_line(machine)}.", "",
        f"- `pytest tests/test_cuda.py`: {tests}",
        *[f"- {line} (tables: {out}/)" for line in benchmarks], "",
        "## Fused LIF kernel against SpikingJelly's Triton LIF (forward + backward, ms, median)", "",
        common.markdown_table(["T", "neurons", "dtype", "spikeacc", "SpikingJelly"], kernels)])
    json_path, md_path = common.write_results(out, NAME, {"machine": machine, "tests": tests,
                                                          "benchmarks": benchmarks, "kernels": kernels}, text)
    print(text)
    print(f"[{NAME}] wrote {json_path} and {md_path}")
    return 0
