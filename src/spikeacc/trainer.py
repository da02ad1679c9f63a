"""The training loop behind ``spikeacc train``: dataset -> encoder -> model -> method.

Every epoch trains on shuffled batches (``method.step``), evaluates test accuracy
with ``method.infer`` (no graph), then writes <out>/checkpoint.pt and
<out>/metrics.json atomically. ``resume=True`` restores model, optimiser, history and
RNG states from the checkpoint, so an interrupted run continues exactly as if it had
not stopped. A NaN/inf loss raises ``TrainingDiverged`` and leaves the last good
checkpoint as it was.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate
from tqdm import tqdm

from . import __version__, encoders, methods
from .data import DataSplit, dataset_options, load_dataset
from .models import build

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
EXPLOSION = 100.0  # a batch loss above this many times max(first batch's loss, 1) stops the run
CHECKPOINT_FORMAT = 2  # 2: networks are ordinary modules (issue 8); format 1 held SpikingNet
# settings that may change between a run and its --resume
RESUMABLE_CHANGES = ("epochs", "resume", "out", "device", "data_dir")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or exploded; training stopped."""


class TrainingInterrupted(RuntimeError):
    """The user pressed Ctrl-C; training stopped."""


@dataclass
class TrainConfig:
    """Everything that defines a run (the CLI's options)."""

    method: str = "saf-f"
    dataset: str = "digits"
    model: str = "mlp"  # a name in models.MODELS, or "package.module:function"
    hidden: tuple[int, ...] = ()  # layer widths / channels; () = the model's default
    T: int = 6
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    encoder: str | None = None  # None: "frames" for event data, "direct" otherwise
    out: str | None = None  # None: a new directory runs/<method>-<dataset>-<UTC time>
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    resume: bool = False
    method_options: list[tuple[str, object]] = dataclasses.field(default_factory=list)  # constructor kwargs
    dataset_options: list[tuple[str, object]] = dataclasses.field(default_factory=list)  # loader kwargs

    def validate(self) -> None:
        """ValueError naming the first bad setting."""
        for name in ("T", "epochs", "batch_size"):
            _check_positive_int(name, getattr(self, name))
        for name in ("limit_train", "limit_test"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if any(int(h) != h or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {list(self.hidden)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.out is None:
            if self.resume:
                raise ValueError("--resume needs --out, the run directory to continue")
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            self.out = f"runs/{self.method}-{self.dataset}-{stamp}".replace(":", "_")

    def record(self) -> dict:
        """Plain-typed dict (JSON and checkpoint safe)."""
        record = dataclasses.asdict(self)
        record["hidden"] = list(self.hidden)
        record["method_options"] = dict(self.method_options)
        record["dataset_options"] = dict(self.dataset_options)
        return record


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or int(value) != value or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available in this torch build")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        models = []
    cpu = models[0] if models else platform.processor() or platform.machine()
    return f"cpu: {cpu} ({os.cpu_count()} cores)"


def subset_indices(n: int, limit: int | None, seed: int) -> torch.Tensor:
    """All indices [n], or a seeded random ``limit`` of them (sorted)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def batches(dataset: Dataset, indices: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of ``dataset`` in the order of ``indices``."""
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        if isinstance(dataset, TensorDataset):
            yield tuple(tensor[idx] for tensor in dataset.tensors)
        else:
            yield default_collate([dataset[i] for i in idx.tolist()])


def atomic_write(path: Path, write: Callable[[object], None]) -> None:
    """Write ``path`` via a temp file in the same directory, fsync, then os.replace:
    readers see the old file or the new one, never a torn one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict:
    """The state a Trainer saved at ``path``; ValueError (one line) for a missing file, a
    file that is not a checkpoint, or another checkpoint format."""
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch's own message is long and suggests unsafe loading
        raise ValueError(f"{path} is not a spikeacc checkpoint (torch.load failed: "
                         f"{type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a spikeacc checkpoint (holds {type(state).__name__})")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has checkpoint format {state.get('format')}, expected {CHECKPOINT_FORMAT}")
    return state


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prepare_run_dir(out: Path) -> int:
    """Create ``out`` and check it can be written (ValueError otherwise), before any
    training; remove temporary files a killed run left there. Returns how many."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    stale = [p for name in (CHECKPOINT, METRICS) for p in out.glob(f".{name}.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return maxrss / (2**20 if sys.platform == "darwin" else 1024), "ru_maxrss (whole process)"


class Trainer:
    """One training run; ``run()`` trains the remaining epochs and returns the metrics."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print,
                 progress: bool | None = None) -> None:
        config.validate()
        self.config, self.log, self.progress = config, log, progress
        self.out = Path(config.out)
        removed = prepare_run_dir(self.out)
        if removed:
            self.log(f"removed {removed} temporary file(s) an interrupted run left in {self.out}")
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.split = load_dataset(config.dataset, config.data_dir, **self._dataset_options())
        self.encoder = encoders.get(self._encoder_name(self.split), config.T)
        self.method = methods.get(config.method, T=config.T, **dict(config.method_options))
        self.net = build(config.model, self.split.sample_shape, self.split.n_classes,
                         hidden=config.hidden).to(self.device, torch.float32)  # the data's dtype
        if hasattr(self.method, "prepare"):  # e.g. single-spike's trainable decays join the net
            self.method.prepare(self.net)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.train_idx = subset_indices(len(self.split.train), config.limit_train, config.seed)
        self.test_idx = subset_indices(len(self.split.test), config.limit_test, config.seed + 1)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.history: list[dict] = []
        self.first_loss: float | None = None  # of the run's first batch (the explosion guard's scale)
        self.position = (0, 0)  # (epoch, batch) being trained
        self._check_model_fits()
        if config.resume:
            self._load_checkpoint()
        elif (self.out / CHECKPOINT).exists():
            self.log(f"note: starting afresh; {self.out / CHECKPOINT} will be overwritten (--resume continues it)")

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def _dataset_options(self) -> dict[str, object]:
        """--dataset-option values; event datasets are binned into T frames unless told otherwise."""
        options = dict(self.config.dataset_options)
        if "frames" in dataset_options(self.config.dataset):
            options.setdefault("frames", self.config.T)
        return options

    def _encoder_name(self, split: DataSplit) -> str:
        name = self.config.encoder or ("frames" if split.frames else "direct")
        if (name == "frames") != bool(split.frames):
            kind = f"event data with {split.frames} frames" if split.frames else "static images"
            raise ValueError(f"encoder {name!r} does not fit dataset {split.name!r} ({kind}); "
                             f"use {'frames' if split.frames else 'direct or poisson'}")
        if split.frames and split.frames != self.config.T:
            raise ValueError(f"dataset {split.name!r} has {split.frames} frames per sample (frames option) "
                             f"but T={self.config.T}; they must agree")
        return name

    def _check_model_fits(self) -> None:
        """Run two test samples through the method: a shape mismatch between dataset and
        model becomes a ValueError here rather than a traceback mid-training."""
        x, _ = next(batches(self.split.test, self.test_idx[:2], 2))
        try:
            with torch.no_grad():
                self.method.infer(self.net, self.encoder(x.to(self.device)))
        except (RuntimeError, TypeError, IndexError) as err:
            reason = str(err).strip().splitlines()[0]
            raise ValueError(f"model {self.config.model!r} does not fit {self.split.name!r} samples "
                             f"{list(self.split.sample_shape)}: {reason}") from err

    def run(self) -> dict:
        """Train epochs len(history)+1 .. config.epochs; return the metrics dict."""
        if len(self.history) >= self.config.epochs:
            self.log(f"{self.checkpoint_path} already has {len(self.history)} epochs; nothing to train")
        try:
            self._train_remaining_epochs()
        except TrainingDiverged as err:
            self._write_metrics(stopped=str(err))
            raise
        except KeyboardInterrupt:
            epoch, batch = self.position
            message = f"interrupted at epoch {epoch}, batch {batch} ({self._last_good()})"
            self._write_metrics(stopped=message)
            raise TrainingInterrupted(message) from None
        return self._write_metrics()

    def _train_remaining_epochs(self) -> None:
        for epoch in range(len(self.history) + 1, self.config.epochs + 1):
            record = self.train_epoch(epoch)
            record.update(self.evaluate())
            if hasattr(self.method, "stats"):  # e.g. ASF-BP's per-layer k and fit error
                record["method_stats"] = self.method.stats()
            self.history.append(record)
            try:
                self._save_checkpoint()
            except BaseException:
                self.history.pop()  # the history is what the checkpoint holds
                raise
            self._write_metrics()
            self.log(f"epoch {epoch}/{self.config.epochs}: train loss {record['train_loss']:.4f} "
                     f"acc {record['train_acc']:.2%} | test acc {record['test_acc']:.2%} "
                     f"| {record['epoch_time_s']:.2f}s")

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the (shuffled) training subset: mean loss, accuracy, wall time."""
        self.net.train()
        order = self.train_idx[torch.randperm(len(self.train_idx), generator=self.shuffle)]
        n_batches = math.ceil(len(order) / self.config.batch_size)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(batches(self.split.train, order, self.config.batch_size), total=n_batches,
                   desc=f"epoch {epoch}/{self.config.epochs}", disable=self._no_bar(), leave=False)
        start = time.perf_counter()
        for batch, (x, y) in enumerate(bar, 1):
            self.position = (epoch, batch)
            x, y = x.to(self.device), y.to(self.device)
            try:
                loss, logits = self.method.step(self.net, self.optimizer, self.encoder(x), y)
            except RuntimeError as err:  # numeric failure inside torch, e.g. an lr that overflows
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise TrainingDiverged(f"training step failed at epoch {epoch}, batch {batch} "
                                       f"({reason}); stopped ({self._last_good()})") from err
            loss = float(loss)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at epoch {epoch}, batch {batch}; stopped "
                    f"({self._last_good()})")
            if self.first_loss is None:
                self.first_loss = loss
            elif loss > EXPLOSION * max(self.first_loss, 1.0):
                raise TrainingDiverged(
                    f"loss exploded to {loss:.3g} at epoch {epoch}, batch {batch} (over {EXPLOSION:g}x the "
                    f"first batch's {self.first_loss:.3g}); stopped ({self._last_good()})")
            loss_sum += loss * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        self._sync()
        return {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                "epoch_time_s": time.perf_counter() - start}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Test accuracy and mean spikes per sample per hidden layer (method.infer)."""
        self.net.eval()
        correct, spike_sums = 0, None
        start = time.perf_counter()
        for x, y in batches(self.split.test, self.test_idx, self.config.batch_size):
            inference = self.method.infer(self.net, self.encoder(x.to(self.device)))
            correct += int((inference.logits.argmax(1).cpu() == y).sum())
            sums = [float(counts.sum()) for counts in inference.spike_counts]
            spike_sums = sums if spike_sums is None else [a + b for a, b in zip(spike_sums, sums)]
        self._sync()
        n = len(self.test_idx)
        return {"test_acc": correct / n, "spikes_per_sample": [s / n for s in spike_sums or []],
                "eval_time_s": time.perf_counter() - start}

    def _no_bar(self) -> bool | None:
        return None if self.progress is None else not self.progress  # None: bar only on a terminal

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _last_good(self) -> str:
        if not self.history:
            return "no checkpoint was written"
        return f"last good checkpoint: {self.checkpoint_path}, epoch {len(self.history)}"

    def _save_checkpoint(self) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.record(),
            "epoch": len(self.history),
            "history": self.history,
            "first_loss": self.first_loss,
            "sample_shape": list(self.split.sample_shape),
            "n_classes": self.split.n_classes,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict() if hasattr(self.method, "state_dict") else None,
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_path
        try:
            state = read_checkpoint(path, self.device)
        except ValueError as err:
            raise ValueError(f"--resume: {err}") from None
        self._check_same_config(state["config"], path)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("method") is not None:  # e.g. ASF-BP's fitted k
            self.method.load_state_dict(state["method"])
        self.history = list(state["history"])
        self.first_loss = state["first_loss"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.shuffle.set_state(state["rng"]["shuffle"].cpu())
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.log(f"resuming {path} after epoch {len(self.history)}")

    def _check_same_config(self, saved: dict, path: Path) -> None:
        now = self.config.record()
        changed = [f"{key}={saved.get(key)!r} -> {now[key]!r}" for key in now
                   if key not in RESUMABLE_CHANGES and saved.get(key) != now[key]]
        if changed:
            raise ValueError(f"--resume: settings differ from {path} ({', '.join(changed)}); "
                             "resume with the same settings or choose another --out")

    def metrics(self, stopped: str | None = None) -> dict:
        """Everything metrics.json records."""
        peak, source = peak_memory_mib(self.device)
        hist = self.history
        return {
            **{key: value for key, value in self.config.record().items() if key not in ("resume", "out")},
            "encoder": self.encoder.name,
            "n_classes": self.split.n_classes,
            "sample_shape": list(self.split.sample_shape),
            "n_parameters": sum(p.numel() for p in self.net.parameters()),
            "n_train": len(self.train_idx),
            "n_test": len(self.test_idx),
            "epochs_done": len(hist),
            "train_loss": [r["train_loss"] for r in hist],
            "train_acc": [r["train_acc"] for r in hist],
            "test_acc": [r["test_acc"] for r in hist],
            "final_test_acc": hist[-1]["test_acc"] if hist else None,
            "first_loss": self.first_loss,
            "epoch_time_s": [r["epoch_time_s"] for r in hist],
            "eval_time_s": [r["eval_time_s"] for r in hist],
            "spikes_per_sample": hist[-1]["spikes_per_sample"] if hist else None,
            "history": hist,
            "peak_memory_mib": peak,
            "peak_memory_source": source,
            "stopped": stopped,
            "versions": {"spikeacc": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "device": str(self.device),
            "device_name": device_name(self.device),
        }

    def _write_metrics(self, stopped: str | None = None) -> dict:
        metrics = self.metrics(stopped)
        text = json.dumps(metrics, indent=2) + "\n"
        atomic_write(self.out / METRICS, lambda f: f.write(text.encode()))
        return metrics


def train(config: TrainConfig, log: Callable[[str], None] = print, progress: bool | None = None) -> dict:
    """Run ``config`` to completion; returns the metrics (also in <out>/metrics.json)."""
    return Trainer(config, log, progress).run()
