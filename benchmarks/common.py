"""What every benchmark shares: the options, the machine description, round-robin timing,
targets checked as PASS/MISS, and writing <name>.json and .md.

Results go to a new run directory (``runs/bench-<UTC time>/``, one per process, so one
command's benchmarks share it) unless ``--out`` names one; ``--update-results`` writes the
committed ``benchmarks/results/`` that the README quotes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

import spikeacc
from spikeacc.cli import int_at_least

from . import KEEPS_FREED_MEMORY, PROG

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Options every benchmark takes: --quick, --device, --repeats, --warmup, --threads,
    --out / --update-results."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int_at_least(1), default=None,
                        help="timed repeats per configuration (median reported)")
    parser.add_argument("--warmup", type=int_at_least(0), default=None, help="untimed steps first")
    parser.add_argument("--threads", type=int_at_least(1), default=None,
                        help="torch CPU threads (default: torch's choice)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None,
                       help="directory for the results (default: a new runs/bench-<UTC time>/)")
    where.add_argument("--update-results", action="store_true",
                       help=f"write the committed results in {RESULTS_DIR.relative_to(RESULTS_DIR.parents[1])}/")
    return parser


_RUN_DIR: list[Path] = []


def output_dir(args: argparse.Namespace) -> Path:
    """Where this benchmark writes (module docstring)."""
    if args.update_results:
        return RESULTS_DIR
    if args.out is not None:
        return args.out
    if not _RUN_DIR:
        _RUN_DIR.append(Path("runs") / f"bench-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}")
    return _RUN_DIR[0]


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the --device (exit with a message if CUDA is missing)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def machine(device: torch.device) -> dict:
    """What the numbers were measured on (named in every results file)."""
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "spikeacc": spikeacc.__version__,
        "spikeacc_commit": _git_commit(Path(spikeacc.__file__).parent),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "malloc_keeps_freed_memory": KEEPS_FREED_MEMORY,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(info: dict) -> str:
    where = info.get("gpu", f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} torch threads)")
    allocator = ", malloc keeps freed memory" if info.get("malloc_keeps_freed_memory") else ""
    return (f"{where}, device {info['device']}, torch {info['torch']}, Python {info['python']}, "
            f"spikeacc {info['spikeacc']} @ {info['spikeacc_commit']}{allocator}, {info['date']}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_commit(path: Path) -> str:
    try:
        result = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def time_round_robin(steps: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each step: ``warmup`` untimed calls each, then ``repeats``
    rounds that call every step once in turn, so drift on a shared machine hits all alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass
class Target:
    """A figure the project must reach, with the measured value and the verdict."""

    name: str
    criterion: str
    measured: float
    passed: bool

    def line(self) -> str:
        verdict = "PASS" if self.passed else "MISS"
        return f"{verdict}  {self.name}: {self.measured:.4g} (target {self.criterion})"


def report(args: argparse.Namespace, name: str, payload: dict, title: str, how: str, table: str) -> int:
    """Write <name>.json/.md (title, machine, how it was measured, the targets if any, the table)
    to the output directory and print the verdicts; returns 0."""
    targets = ["## Targets", "", *[f"- {t.line()}" for t in payload["targets"]], ""] if payload["targets"] else []
    text = "\n".join([f"# Benchmark: {title} ({'quick smoke run' if args.quick else 'full run'})", "",
                      f"Machine: {machine_line(payload['machine'])}.", "", how, "", *targets, table])
    json_path, md_path = write_results(output_dir(args), name, payload, text)
    for target in payload["targets"]:
        print(f"[{name}] {target.line()}")
    print(f"[{name}] wrote {json_path} and {md_path}")
    return 0


def publish(args: argparse.Namespace, name: str, payload: dict, markdown: str, lines: Sequence[str]) -> int:
    """Write <name>.json/.md to the output directory, print the machine, ``lines`` (the
    verdicts) and where the files went; returns 0."""
    json_path, md_path = write_results(output_dir(args), name, payload, markdown)
    print(f"[{name}] {machine_line(payload['machine'])}")
    for line in lines:
        print(f"[{name}] {line}")
    print(f"[{name}] wrote {json_path} and {md_path}")
    return 0


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out_dir: Path, name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write <out_dir>/<name>.json (``payload``, targets as dicts) and <name>.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    payload = {**payload, "targets": [asdict(t) if isinstance(t, Target) else t for t in payload.get("targets", [])]}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path
