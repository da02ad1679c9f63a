"""The training loop behind ``spikeacc train``: dataset -> encoder -> model -> method.

Every epoch trains on shuffled batches (``method.step``; ``--augment`` transforms each
training batch before the encoder), evaluates test accuracy with ``method.infer`` (no
graph), then writes <out>/checkpoint.pt and <out>/metrics.json atomically. The
optimiser is Adam (``--weight-decay``: its L2 term), its learning rate multiplied by
``--lr-gamma`` after each of ``--lr-milestones``; with ``--milestone-restart`` each
milestone also restarts from the weights of the epoch with the lowest training loss so
far, with a new Adam (its moments reset), as the single-spike authors' trainer does.
``resume=True`` restores model, optimiser, history, those best weights and RNG states
from the checkpoint, so an interrupted run continues exactly as if it had not stopped. A
NaN/inf loss raises ``TrainingDiverged`` and leaves the last good checkpoint as it was.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate
from tqdm import tqdm

from . import __version__, augment, data, distributed, encoders, methods, models
from .checkpoint import (CHECKPOINT, CHECKPOINT_FORMAT, METRICS, atomic_write, prepare_run_dir, read_checkpoint,
                         weight_differences)
from . import graph
from .data import DataSplit, dataset_options, load_dataset
from .methods.base import spiking_inference
from .model_spec import build_network
from .neurons import LIF

EXPLOSION = 100.0  # a batch loss above this many times max(first batch's loss, 1) stops the run
# settings that may change between a run and its --resume
RESUMABLE_CHANGES = ("epochs", "resume", "out", "device", "data_dir", "threads")
RUN_SETTINGS = ("T", "compile")  # passed to the method by the run, so no --method-option


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or exploded; training stopped."""


class TrainingInterrupted(RuntimeError):
    """The user pressed Ctrl-C; training stopped."""


class ResumeRefused(ValueError):
    """--resume refused for what the checkpoint holds: the same on every process of a run."""


@dataclass
class TrainConfig:
    """Everything that defines a run (the CLI's options)."""

    method: str = "saf-f"
    dataset: str = "digits"
    model: str = "mlp"  # a name in models.MODELS, or "package.module:function"
    hidden: tuple[int, ...] = ()  # layer widths / channels; () = the model's default
    tau: float = 2.0  # the built-in models' neurons: LIF(tau, v_th)
    v_th: float = 1.0
    T: int = 6
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    lr_milestones: tuple[int, ...] = ()  # epochs after which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    milestone_restart: bool = False  # at each milestone: the best (lowest train loss) weights, a new Adam
    weight_decay: float = 0.0  # Adam's L2 term
    augment: str | None = None  # a name in augment.AUGMENTATIONS: training batches only
    encoder: str | None = None  # None: "frames" for event data, "direct" otherwise
    out: str | None = None  # None: a new directory runs/<method>-<dataset>-<UTC time>
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    threads: int | None = None  # torch CPU threads per process (None: torch's choice)
    amp: bool = False  # bfloat16 autocast of the products (neuron state stays float32)
    compile: bool = False  # neuron dynamics under torch.compile
    resume: bool = False
    model_options: list[tuple[str, object]] = dataclasses.field(default_factory=list)  # ready-made model kwargs
    method_options: list[tuple[str, object]] = dataclasses.field(default_factory=list)  # constructor kwargs
    encoder_options: list[tuple[str, object]] = dataclasses.field(default_factory=list)  # encoder kwargs
    dataset_options: list[tuple[str, object]] = dataclasses.field(default_factory=list)  # loader kwargs

    def validate(self) -> None:
        """ValueError naming the first bad setting."""
        for name in ("T", "epochs", "batch_size"):
            _check_positive_int(name, getattr(self, name))
        for name in ("limit_train", "limit_test", "threads"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if any(int(h) != h or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {list(self.hidden)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if any(int(m) != m or m <= 0 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(
                set(self.lr_milestones)):
            raise ValueError(f"lr milestones must be increasing positive epochs, got {list(self.lr_milestones)}")
        if not (math.isfinite(self.lr_gamma) and self.lr_gamma > 0):
            raise ValueError(f"lr gamma must be a positive finite number, got {self.lr_gamma}")
        if ":" in self.model and (self.tau, self.v_th) != (2.0, 1.0):
            raise ValueError(f"--tau and --v-th set the built-in models' neurons; model {self.model} builds its own")
        self.neuron()  # LIF's own checks: tau > 1, v_th > 0
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        if self.milestone_restart and not self.lr_milestones:
            raise ValueError("--milestone-restart restarts at the --lr-milestones; give them")
        if self.augment is not None:
            augment.get(self.augment)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.out is not None and not str(self.out).strip():
            raise ValueError("--out is empty; give the run directory (or no --out: a new one under runs/)")
        if self.out is None:
            if self.resume:
                raise ValueError("--resume needs --out, the run directory to continue")
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            self.out = f"runs/{self.method}-{self.dataset}-{stamp}".replace(":", "_")
        self.read_options()

    def read_options(self) -> None:
        """Read the model, method, encoder and dataset options as the types their functions
        declare (``spikeacc.typed_options``; text such as "off" included), in place. A
        user's model takes no options (``model_spec.build_network`` says so)."""
        for key, _ in self.method_options:
            if key in RUN_SETTINGS:
                raise ValueError(f"--method-option {key}: {key} is a setting of the run, not a method "
                                 f"option; give --{key}")
        if ":" not in self.model:
            self.model_options = list(models.read_options(self.model, self.model_options).items())
        self.method_options = list(methods.read_options(self.method, self.method_options).items())
        self.encoder_options = list(encoders.read_options(self.encoder_name(), self.encoder_options).items())
        self.dataset_options = list(data.read_options(self.dataset, self.dataset_options).items())

    def neuron(self) -> LIF:
        """The built-in models' neuron, LIF(tau, v_th)."""
        return LIF(tau=self.tau, v_th=self.v_th)

    def encoder_name(self) -> str:
        """--encoder, or by default frames for event data and direct for the others."""
        return self.encoder or ("frames" if "frames" in dataset_options(self.dataset) else "direct")

    @classmethod
    def from_record(cls, record: dict) -> "TrainConfig":
        """The config ``record()`` wrote (settings it did not know keep their defaults)."""
        known = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        for key in ("hidden", "lr_milestones"):
            values[key] = tuple(values.get(key, ()))
        for key in ("model_options", "method_options", "encoder_options", "dataset_options"):
            values[key] = list(dict(values.get(key, {})).items())
        return cls(**values)

    def record(self) -> dict:
        """Plain-typed dict (JSON and checkpoint safe)."""
        record = dataclasses.asdict(self)
        record["hidden"] = list(self.hidden)
        record["lr_milestones"] = list(self.lr_milestones)
        record["model_options"] = dict(self.model_options)
        record["method_options"] = dict(self.method_options)
        record["encoder_options"] = dict(self.encoder_options)
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


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return maxrss / (2**20 if sys.platform == "darwin" else 1024), "ru_maxrss (whole process)"


def adam(parameters, lr: float, device: torch.device, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The trainer's optimizer: torch's fused Adam (one kernel per parameter) where the
    device has it, about half the time of the per-op default's update in a one-thread MLP
    784-800-10 step at batch 64. ``weight_decay``: Adam's L2 term (added to the gradient)."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay,
                            fused=True if device.type in ("cpu", "cuda") else None)


def load_data(config: TrainConfig) -> tuple[DataSplit, encoders.Encoder]:
    """A run's dataset and the encoder that turns its samples into the method's input."""
    split = load_dataset(config.dataset, config.data_dir, **_dataset_options(config))
    return split, encoders.get(_encoder_name(config, split), config.T, **dict(config.encoder_options))


def build_model(config: TrainConfig, sample_shape: tuple[int, ...], n_classes: int, device: torch.device
                ) -> tuple[methods.Method, torch.nn.Module]:
    """A run's method and network (on ``device``, float32, with the method's own parts such
    as single-spike's trainable decays attached); ``load_run`` rebuilds a run the same way."""
    method = methods.get(config.method, T=config.T, compile=config.compile, **dict(config.method_options))
    neuron = config.neuron() if ":" not in config.model else None
    net = build_network(config.model, sample_shape, n_classes, hidden=config.hidden, neuron=neuron,
                        options=dict(config.model_options)).to(device, torch.float32)  # the data's dtype
    if hasattr(method, "prepare"):  # e.g. single-spike's trainable decays join the net
        method.prepare(net)
    return method, net


def _dataset_options(config: TrainConfig) -> dict[str, object]:
    """--dataset-option values; event datasets are binned into T frames unless told otherwise."""
    options = dict(config.dataset_options)
    if "frames" in dataset_options(config.dataset):
        options.setdefault("frames", config.T)
    return options


def _encoder_name(config: TrainConfig, split: DataSplit) -> str:
    name = config.encoder_name()
    if (name == "frames") != bool(split.frames):
        kind = f"event data with {split.frames} frames" if split.frames else "static images"
        raise ValueError(f"encoder {name!r} does not fit dataset {split.name!r} ({kind}); "
                         f"use {'frames' if split.frames else 'direct or poisson'}")
    if split.frames and split.frames != config.T:
        raise ValueError(f"dataset {split.name!r} has {split.frames} frames per sample (frames option) "
                         f"but T={config.T}; they must agree")
    return name


class Trainer:
    """One training run; ``run()`` trains the remaining epochs and returns the metrics."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print,
                 progress: bool | None = None) -> None:
        config.validate()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.group = distributed.setup(resolve_device(config.device))  # one process without torchrun
        self.device = self.group.device
        self.config, self.progress = config, progress
        self.log = log if self.group.is_main else (lambda message: None)
        self.out = Path(config.out)
        torch.manual_seed(config.seed)
        self.split, self.encoder = load_data(config)
        self.method, self.net = build_model(config, self.split.sample_shape, self.split.n_classes, self.device)
        distributed.attach(self.method, self.net, self.group)
        self.optimizer = adam(self.net.parameters(), config.lr, self.device, config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.MultiStepLR(  # a no-op without milestones
            self.optimizer, list(config.lr_milestones), config.lr_gamma)
        self.train_idx = subset_indices(len(self.split.train), config.limit_train, config.seed)
        self.test_idx = subset_indices(len(self.split.test), config.limit_test, config.seed + 1)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.augment = augment.get(config.augment) if config.augment else None
        if self.augment and len(self.split.sample_shape) != 3:
            raise ValueError(f"--augment {config.augment} transforms images [C, H, W]; {self.split.name!r} "
                             f"samples are {list(self.split.sample_shape)}")
        self.history: list[dict] = []
        self.deployed_test_acc: float | None = None  # once every epoch is trained
        self.best: tuple[float, dict] | None = None  # (train loss, weights) of the best epoch, --milestone-restart
        self.first_loss: float | None = None  # of the run's first batch (the explosion guard's scale)
        self.position = (0, 0)  # (epoch, batch) being trained
        self.samples_trained = 0  # by this rank
        self.samples_per_rank = [0] * self.group.world_size  # gathered at the end of each epoch
        self._check_model_fits()
        if config.resume:
            self._load_checkpoint()
        elif (self.out / CHECKPOINT).exists():
            self.log(f"note: starting afresh; {self.out / CHECKPOINT} will be overwritten (--resume continues it)")
        if self.group.is_main:  # only now: a run refused before training leaves no new --out behind
            removed = prepare_run_dir(self.out)
            if removed:
                self.log(f"removed {removed} temporary file(s) an interrupted run left in {self.out}")

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def _check_model_fits(self) -> None:
        """Run two test samples through the method: a shape mismatch between dataset and
        model, or logits other than [batch, classes], becomes a ValueError here rather than
        a traceback mid-training (or, for extra outputs, a run that trains them silently)."""
        x, _ = next(batches(self.split.test, self.test_idx[:2], 2))
        try:
            with torch.no_grad():
                logits = self.method.infer(self.net, self.encoder(x.to(self.device))).logits
        except (RuntimeError, TypeError, IndexError) as err:
            reason = str(err).strip().splitlines()[0]
            raise ValueError(f"model {self.config.model!r} does not fit {self.split.name!r} samples "
                             f"{list(self.split.sample_shape)}: {reason}") from err
        expected = [len(x), self.split.n_classes]
        if list(logits.shape) != expected:
            raise ValueError(f"model {self.config.model!r} gives logits of shape {list(logits.shape)} for {len(x)} "
                             f"samples; {self.split.name!r} has {self.split.n_classes} classes, so it must give "
                             f"{expected} ([batch, classes])")

    def run(self) -> dict:
        """Train epochs len(history)+1 .. config.epochs; return the metrics dict."""
        if len(self.history) >= self.config.epochs:
            self.log(f"{self.checkpoint_path} already has {len(self.history)} epochs; nothing to train")
        try:
            self._train_remaining_epochs()
            self.deployed_test_acc = self.deployed_accuracy()
        except TrainingDiverged as err:
            self._write_metrics(stopped=str(err))
            raise
        except KeyboardInterrupt:
            epoch, batch = self.position
            message = f"interrupted at epoch {epoch}, batch {batch} ({self._last_good()})"
            self._write_metrics(stopped=message)
            raise TrainingInterrupted(message) from None
        self.log(f"deployed as the LIF network (spiking_inference): test acc {self.deployed_test_acc:.2%}")
        return self._write_metrics()

    def _train_remaining_epochs(self) -> None:
        for epoch in range(len(self.history) + 1, self.config.epochs + 1):
            record = self.train_epoch(epoch)
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            self.schedule.step()
            record.update(self.evaluate())
            if self.config.milestone_restart:
                self.restart_at_milestone(epoch, record["train_loss"])
            if hasattr(self.method, "stats"):  # e.g. ASF-BP's per-layer k and fit error
                record["method_stats"] = self.method.stats()
            self.history.append(record)
            self.samples_per_rank = self.gather_samples()
            try:
                self._save_checkpoint()
            except BaseException:
                self.history.pop()  # the history is what the checkpoint holds
                raise
            self._write_metrics()
            self.log(f"epoch {epoch}/{self.config.epochs}: train loss {record['train_loss']:.4f} "
                     f"acc {record['train_acc']:.2%} | test acc {record['test_acc']:.2%} "
                     f"| {record['epoch_time_s']:.2f}s")

    def restart_at_milestone(self, epoch: int, train_loss: float) -> None:
        """Keep the weights of the epoch with the lowest training loss; after a milestone
        epoch, go back to them with a new Adam (the single-spike authors' trainer)."""
        if self.best is None or train_loss < self.best[0]:
            self.best = (train_loss, {k: v.detach().clone() for k, v in self.net.state_dict().items()})
        if epoch in self.config.lr_milestones:
            self.net.load_state_dict(self.best[1])
            self.optimizer.state.clear()  # Adam's moments and step counts: a new Adam at the decayed rate
            self.log(f"epoch {epoch}: milestone; restarting from the weights of train loss {self.best[0]:.4f}")

    def global_batches(self) -> list[torch.Tensor]:
        """This epoch's global batches of training indices (the same on every rank); a last
        batch with fewer samples than ranks is dropped (a rank would get none)."""
        order = self.train_idx[torch.randperm(len(self.train_idx), generator=self.shuffle)]
        chunks = list(order.split(self.config.batch_size))
        return [c for c in chunks if len(c) >= self.group.world_size]

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the (shuffled) training subset: mean loss, accuracy, wall time."""
        self.net.train()
        self.method.begin_epoch(epoch)
        global_batches = self.global_batches()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(global_batches, desc=f"epoch {epoch}/{self.config.epochs}", disable=self._no_bar(), leave=False)
        start = time.perf_counter()
        for batch, indices in enumerate(bar, 1):
            self.position = (epoch, batch)
            x, y = next(batches(self.split.train, indices[self.group.shard(len(indices))], len(indices)))
            x, y = x.to(self.device), y.to(self.device)
            n_global = len(indices)
            self.group.set_batch(len(y), n_global)
            try:
                if self.augment:
                    x = self.augment(x)
                with self._autocast():
                    loss, logits = self.method.step(self.net, self.optimizer, self.encoder(x), y)
            except distributed.DistributedError:
                raise
            except RuntimeError as err:  # numeric failure inside torch, e.g. an lr that overflows
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise TrainingDiverged(f"training step failed at epoch {epoch}, batch {batch} "
                                       f"({reason}); stopped ({self._last_good()})") from err
            self.samples_trained += len(y)
            summed = self.group.all_reduce_sum(torch.tensor(  # one reduction: loss sum, correct
                [float(loss) * len(y), float((logits.argmax(1) == y).sum())], dtype=torch.float64, device=self.device))
            loss = float(summed[0]) / n_global  # the global batch's mean loss
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
            loss_sum += loss * n_global
            correct += int(summed[1])
            seen += n_global
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        self._sync()
        return {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                "epoch_time_s": time.perf_counter() - start}

    def evaluate(self) -> dict:
        """Test accuracy and mean spikes per sample of every neuron site (method.infer);
        each rank evaluates its shard of the test subset."""
        start = time.perf_counter()
        totals = self._test(lambda x: self.method.infer(self.net, x))
        n = len(self.test_idx)
        return {"test_acc": float(totals[0]) / n, "spikes_per_sample": (totals[1:] / n).tolist(),
                "eval_time_s": time.perf_counter() - start}

    def deployed_accuracy(self) -> float:
        """Test accuracy of the trained weights run as the LIF network they deploy to
        (``spiking_inference``, the mean readout of o[t]: what a neuromorphic chip or a NIR
        consumer computes), whatever neurons the method trained with."""
        totals = self._test(lambda x: spiking_inference(self.net, x, self.config.T, "mean"))
        return float(totals[0]) / len(self.test_idx)

    @torch.no_grad()
    def _test(self, infer: Callable[[torch.Tensor], methods.Inference]) -> torch.Tensor:
        """[correct, spikes of each neuron site] over the test subset (each rank its shard, summed)."""
        self.net.eval()
        n_sites = len(graph.of(self.net).sites)
        totals = torch.zeros(1 + n_sites, dtype=torch.float64)
        for x, y in batches(self.split.test, self.test_idx[self.group.shard(len(self.test_idx))],
                            self.config.batch_size):
            with self._autocast():
                inference = infer(self.encoder(x.to(self.device)))
            totals[0] += int((inference.logits.argmax(1).cpu() == y).sum())
            totals[1:] += torch.tensor([float(counts.sum()) for counts in inference.spike_counts])
        self._sync()
        return self.group.all_reduce_sum(totals.to(self.device)).cpu()

    def _autocast(self) -> torch.autocast:
        """bfloat16 autocast with --amp (a no-op without)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp)

    def _no_bar(self) -> bool | None:
        if not self.group.is_main:
            return True
        return None if self.progress is None else not self.progress  # None: bar only on a terminal

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _last_good(self) -> str:
        if not self.history:
            return "no checkpoint was written"
        return f"last good checkpoint: {self.checkpoint_path}, epoch {len(self.history)}"

    def _save_checkpoint(self) -> None:
        if not self.group.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.record(),
            "epoch": len(self.history),
            "history": self.history,
            "first_loss": self.first_loss,
            "sample_shape": list(self.split.sample_shape),
            "n_classes": self.split.n_classes,
            "world_size": self.group.world_size,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "method": self.method.state_dict() if hasattr(self.method, "state_dict") else None,
            "best": self.best,
            "samples_trained": self.samples_per_rank,
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_path
        state = read_checkpoint(path, self.device)
        self._check_resumable(state, path)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("method") is not None:  # e.g. ASF-BP's fitted k
            self.method.load_state_dict(state["method"])
        self.history = list(state["history"])
        self.best = state.get("best")
        self.first_loss = state["first_loss"]
        self.samples_per_rank = list(state["samples_trained"])
        self.samples_trained = self.samples_per_rank[self.group.rank]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.shuffle.set_state(state["rng"]["shuffle"].cpu())
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.log(f"resuming {path} after epoch {len(self.history)}")

    def _check_resumable(self, state: dict, path: Path) -> None:
        """ResumeRefused unless the checkpoint ``state`` has this run's settings, process
        count and network (the names and shapes of its weights)."""
        self._check_same_config(state["config"], path)
        if state["world_size"] != self.group.world_size:
            raise ResumeRefused(f"--resume: {path} was trained by {state['world_size']} process(es), this run has "
                                f"{self.group.world_size}; resume with the same number (torchrun --nproc_per_node)")
        differences = weight_differences(self.net, state["model"])
        if differences:
            raise ResumeRefused(f"--resume: the weights in {path} do not fit this network ({'; '.join(differences)}); "
                                "its code or settings changed since, or the checkpoint is not this run's")

    def _check_same_config(self, saved: dict, path: Path) -> None:
        now = self.config.record()
        # a setting added after the checkpoint was written ran at its default
        saved = {**TrainConfig().record(), **saved}
        changed = [f"{key}={saved[key]!r} -> {now[key]!r}" for key in now
                   if key not in RESUMABLE_CHANGES and saved[key] != now[key]]
        if changed:
            raise ResumeRefused(f"--resume: settings differ from {path} ({', '.join(changed)}); "
                                "resume with the same settings or choose another --out")

    def gather_samples(self) -> list[int]:
        """Training samples each rank has processed (a collective: every rank calls it)."""
        counts = torch.zeros(self.group.world_size, dtype=torch.float64, device=self.device)
        counts[self.group.rank] = self.samples_trained
        return [int(c) for c in self.group.all_reduce_sum(counts).tolist()]

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
            "deployed_test_acc": self.deployed_test_acc,
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
            "world_size": self.group.world_size,
            "train_samples_per_rank": self.samples_per_rank,  # as of the last finished epoch
        }

    def _write_metrics(self, stopped: str | None = None) -> dict:
        metrics = self.metrics(stopped)
        if self.group.is_main:
            text = json.dumps(metrics, indent=2) + "\n"
            atomic_write(self.out / METRICS, lambda f: f.write(text.encode()))
        return metrics


def train(config: TrainConfig, log: Callable[[str], None] = print, progress: bool | None = None) -> dict:
    """Run ``config`` to completion; returns the metrics (also in <out>/metrics.json)."""
    return Trainer(config, log, progress).run()
