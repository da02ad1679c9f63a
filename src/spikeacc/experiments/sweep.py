"""``spikeacc sweep``: ``spikeacc train`` over a grid of options, seeds and workers, on
Optuna (a study in a database: SQLite by default, any database URL to share one sweep
between machines that run the same command).

Each point of the grid (``grid.py``) is one trial and one run directory,
``<out>/trials/<point>`` (checkpoint.pt, metrics.json, train.log). Every sweep command
enqueues the points the study does not hold yet, then its workers take trials from the
queue, each running ``spikeacc train`` in a process of its own with ``--threads`` such that
workers x threads stay within the cores (unless ``--oversubscribe``). A worker keeps a
heartbeat: a trial whose worker died (the sweep killed) is failed after the grace period
and queued again, and its run resumes from its last checkpoint; finished trials are never
run again. Running the same command again therefore continues a killed sweep.
``--search N`` samples N trials from the same choices with Optuna's TPE instead of the
whole grid. A line per finished trial; at the end (and with ``--report`` alone) the
report of ``summary.py``.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Sequence

from ..checkpoint import CHECKPOINT, METRICS
from .grid import Grid, RaisingParser, check_points, parse_grid, point_name
from .summary import finished_metrics, write_report

STUDY = "spikeacc-sweep"


def build_parser() -> RaisingParser:
    parser = RaisingParser(
        prog="spikeacc sweep", description="Train over a grid of spikeacc train options: give any train option a "
        "comma-separated list (--method bptt,saf-f --T 2,4,8 --tau 1.5,2,4; list values such as --hidden split "
        "on '/'). Resumable: run the same command again.", epilog="Every other option is spikeacc train's "
        "(spikeacc train --help).")
    parser.add_argument("--out", default=None, help="the sweep's directory (default: runs/sweep-<UTC time>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 for every point")
    parser.add_argument("--workers", type=int, default=1, help="trials run at once by this command")
    parser.add_argument("--oversubscribe", action="store_true",
                        help="allow workers x --threads above the cores (on a 2-core machine two 2-thread "
                             "trials ran an epoch up to 100x slower than one thread each)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: sqlite:///<out>/sweep.db); workers on other "
                             "machines share a sweep by running the same command with the same URL and --out")
    parser.add_argument("--search", type=int, default=None, metavar="N",
                        help="sample N trials from the choices with TPE (maximising test accuracy) "
                             "instead of running the whole grid")
    parser.add_argument("--heartbeat", type=float, default=10.0,
                        help="seconds between a worker's heartbeats; a trial silent for 6 of them is "
                             "taken as dead (its worker killed), failed and queued again")
    parser.add_argument("--report", action="store_true", help="only write the report of the finished trials")
    return parser


def main(argv: Sequence[str]) -> int:
    args, train_argv = build_parser().parse_known_args(list(argv))
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ValueError("spikeacc sweep runs on Optuna: pip install 'spikeacc[sweep]'") from None
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    if args.report:
        return _report(out)
    grid = parse_grid(train_argv, args.seeds)
    threads = _threads(grid, args.workers, args.oversubscribe)
    if args.workers < 1 or (args.search is not None and args.search < 1):
        raise ValueError("--workers and --search take a positive number")
    check_points(grid, out)
    out.mkdir(parents=True, exist_ok=True)
    storage_url = args.storage or f"sqlite:///{out.resolve() / 'sweep.db'}"
    sweep = Sweep(grid, out, storage_url, threads, args.heartbeat, searching=args.search is not None)
    axes = " x ".join(f"{len(values)} {_param(axis)}" for axis, values in grid.axes.items())
    print(f"[sweep] {args.search or len(grid.points())} trials ({axes}{', TPE search' if args.search else ''}), "
          f"{args.workers} worker(s) x {threads} thread(s), study {storage_url}")
    workers = [threading.Thread(target=sweep.work, args=(args.search,), daemon=True) for _ in range(args.workers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return _report(out)


def _report(out: Path) -> int:
    written = write_report(out)
    print(f"[sweep] report: {', '.join(str(path) for path in written)}")
    return 0


def _threads(grid: Grid, workers: int, oversubscribe: bool) -> int:
    """Each trial's --threads: the one given, else the cores shared by the workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if "--threads" in grid.axes:
        raise ValueError("--threads is one value for every trial (the sweep keeps workers x threads within "
                         "the cores)")
    given = int(grid.fixed[grid.fixed.index("--threads") + 1]) if "--threads" in grid.fixed else None
    threads = given or max(1, cores // max(workers, 1))
    if workers * threads > cores and not oversubscribe:
        raise ValueError(f"{workers} workers x {threads} threads exceed the {cores} cores; give fewer, or "
                         "--oversubscribe")
    if given is None:
        grid.fixed += ["--threads", str(threads)]
    return threads


class Sweep:
    """The study and the trial runner, shared by the worker threads of one command."""

    def __init__(self, grid: Grid, out: Path, storage_url: str, threads: int, heartbeat: float,
                 searching: bool) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
        self.grid, self.out, self.threads, self.searching = grid, out, threads, searching
        self.storage_url, self.heartbeat = storage_url, heartbeat
        self.lock, self.asking = threading.Lock(), threading.Lock()  # printing; taking a trial from the queue
        self.choices = {_param(axis): values for axis, values in grid.axes.items()}
        if not searching:
            study = self.study()
            for point in grid.points():
                study.enqueue_trial({_param(axis): value for axis, value in point.items()}, user_attrs={"queued": True},
                                    skip_if_exists=True)

    def study(self):
        """The study, through a storage of its own (one per worker thread)."""
        import optuna
        from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

        storage = RDBStorage(self.storage_url, heartbeat_interval=max(1, round(self.heartbeat)),
                             grace_period=max(6, round(6 * self.heartbeat)),
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=None),
                             engine_kwargs={"connect_args": {"timeout": 60}} if self.storage_url.startswith("sqlite")
                             else {})
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True)
        ask = study.ask

        def ask_one_at_a_time(*args, **kwargs):
            with self.asking:  # on SQLite two threads asking at once can both take the same waiting trial
                return ask(*args, **kwargs)

        study.ask = ask_one_at_a_time
        return study

    def work(self, search: int | None) -> None:
        """Run trials until the queue is empty and no other worker's trial is running (grid),
        or until the study holds ``search`` finished trials (search)."""
        import optuna
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        study = self.study()
        if search is not None:
            sampler_study = optuna.load_study(study_name=STUDY, storage=study._storage,
                                              sampler=optuna.samplers.TPESampler(seed=0))
            callback = optuna.study.MaxTrialsCallback(search, states=(TrialState.COMPLETE, TrialState.FAIL))
            sampler_study.optimize(self.objective, callbacks=[callback], catch=(TrialFailed,))
            return
        while True:
            fail_stale_trials(study)  # a dead worker's trial: failed, and queued again
            states = [trial.state for trial in study.get_trials(deepcopy=False)]
            if TrialState.WAITING in states:
                try:
                    study.optimize(self.objective, n_trials=1, catch=(TrialFailed,))
                except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                    pass  # taken for dead and run again meanwhile: the run directory's lock kept them apart
            elif TrialState.RUNNING in states:
                time.sleep(self.heartbeat)  # another worker's trial, or a dead one going stale
            else:
                return

    def objective(self, trial) -> float:
        """One trial: its point's run, resumed if it has a checkpoint; the test accuracy."""
        import optuna

        if not trial.user_attrs.get("queued") and not self.searching:
            raise optuna.TrialPruned()  # the queue was emptied by another worker meanwhile
        point = {axis: trial.suggest_categorical(_param(axis), self.choices[_param(axis)]) for axis in self.grid.axes}
        run_dir = self.out / "trials" / point_name(point)
        trial.set_user_attr("run_dir", str(run_dir))
        label = ", ".join(f"{axis.lstrip('-')}={value}" for axis, value in point.items()) or "the run"
        metrics = finished_metrics(run_dir)  # a run that finished as its worker was killed is not run again
        if metrics is None:
            returncode, last_line = self.train(point, run_dir)
            if returncode != 0:
                self.say(f"[sweep] trial {trial.number} FAILED ({label}): {last_line} (see {run_dir / 'train.log'})")
                raise TrialFailed(last_line)
            metrics = json.loads((run_dir / METRICS).read_text())
        for key in ("final_test_acc", "deployed_test_acc", "peak_memory_mib"):
            trial.set_user_attr(key, metrics[key])
        seconds = sum(metrics["epoch_time_s"]) / max(len(metrics["epoch_time_s"]), 1)
        self.say(f"[sweep] trial {trial.number} done ({label}): test {metrics['final_test_acc']:.2%}, deployed "
                 f"{metrics['deployed_test_acc']:.2%}, {seconds:.2f} s/epoch, {run_dir}")
        return metrics["final_test_acc"]

    def train(self, point: dict[str, str], run_dir: Path) -> tuple[int, str]:
        """``spikeacc train`` for a point in a process that dies with this one: (exit code, last line)."""
        argv = [*self.grid.fixed, *self.grid.argv(point), "--out", str(run_dir)]
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / ".lock", "w") as lock, open(run_dir / "train.log", "a") as log:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time in a directory, whoever took the trial
            if (run_dir / CHECKPOINT).exists():
                argv.append("--resume")  # an interrupted run continues from its last epoch
            log.write(f"$ spikeacc train {' '.join(argv)}\n")
            log.flush()
            done = subprocess.run([sys.executable, "-m", "spikeacc", "train", *argv], stdout=log,
                                  stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, pass_fds=[lock.fileno()])
        lines = (run_dir / "train.log").read_text().strip().splitlines()
        return done.returncode, lines[-1] if lines else ""

    def say(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)


class TrialFailed(RuntimeError):
    """A trial's run exited with an error (its train.log says why)."""


def _param(axis: str) -> str:
    return axis.lstrip("-")


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM when the sweep process dies (even
    killed), so no orphan run keeps writing into a run directory the next sweep resumes."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
