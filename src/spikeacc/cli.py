"""Command line: ``spikeacc train ...``, ``spikeacc export ...`` and ``spikeacc bench ...``.

Errors from bad arguments or bad data files print one line
``spikeacc: error: ...`` and exit 2, before anything is written; a diverging loss (NaN/inf,
or exploding) exits 3, Ctrl-C exits 130; both keep the last checkpoint. A run whose torch
threads exceed the cores other processes leave free says so in one ``spikeacc: warning:``
line and goes on.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C
EXIT_PEER_LOST = 4  # a torchrun process lost the others


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single ``spikeacc: error: ...`` line (exit 2)."""

    def error(self, message: str):
        fail(message)


class DefaultsFormatter(argparse.HelpFormatter):
    """Help lines end with the default, where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if action.help is None or any(default is empty for empty in (None, False, argparse.SUPPRESS)) \
                or default in ((), []):
            return action.help
        return f"{action.help} (default: %(default)s)"


def fail(message: str, code: int = EXIT_USAGE):
    rank = os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    sys.stderr.write(f"spikeacc: error: {'' if rank is None else f'rank {rank}: '}{message}\n")
    sys.exit(code)


def warn(message: str) -> None:
    """One ``spikeacc: warning: ...`` line on stderr; the run goes on."""
    sys.stderr.write(f"spikeacc: warning: {message}\n")


def fail_once(message: str) -> None:
    """fail() for an error every process of a torchrun run meets alike: rank 0 alone says
    it; all wait for each other before exiting (torchrun stops the other processes as soon
    as one exits, which could be before rank 0 has said it)."""
    from . import distributed

    if os.environ.get("RANK", "0") == "0":
        sys.stderr.write(f"spikeacc: error: {message}\n")
        sys.stderr.flush()
    distributed.shutdown()
    sys.exit(EXIT_USAGE)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE, the VALUE kept as text: the trainer reads it as the type the option
    declares (``spikeacc.typed_options``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def number(text: str) -> float:
    """argparse type: a number (inf allowed), not NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value:
        raise argparse.ArgumentTypeError("must be a number, got nan")
    return value


def finite_float(text: str, minimum: float, inclusive: bool) -> float:
    """argparse type: a finite number above ``minimum`` (or equal to it, ``inclusive``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= minimum if inclusive else value > minimum) or value == float("inf"):
        wanted = f"a finite number >= {minimum:g}" if inclusive else "a positive finite number"
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
    return value


def positive_float(text: str) -> float:
    return finite_float(text, 0.0, inclusive=False)


def non_negative_float(text: str) -> float:
    return finite_float(text, 0.0, inclusive=True)


def model_name(text: str) -> str:
    """A name in models.MODELS, or package.module:function (checked when it is built)."""
    from .models import MODELS

    if text in MODELS or ":" in text:
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(MODELS)}, "
                                     "or give package.module:function)")


def int_list(text: str) -> tuple[int, ...]:
    """"800" or "16,32" -> (800,) or (16, 32); "" -> () (none given)."""
    if not text.strip():
        return ()
    parts = text.split(",")
    if not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty entry; give integers separated by single commas")
    return tuple(positive_int(part) for part in parts)


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    """The options of ``spikeacc train`` (``spikeacc sweep`` reads lists of them)."""
    from . import augment, encoders, methods
    from .data import DATASETS
    from .models import MODELS

    train.add_argument("--method", default="saf-f", choices=methods.names(), help="training method")
    train.add_argument("--dataset", default="digits", choices=list(DATASETS), help="dataset")
    train.add_argument("--model", default="mlp", type=model_name,
                       metavar="{" + ",".join(MODELS) + "}|package.module:function",
                       help="network: a name, or package.module:function returning an nn.Module (called "
                            "with the sample shape and the number of classes)")
    train.add_argument("--hidden", type=int_list, default=(), metavar="N[,N...]",
                       help="hidden layer widths (mlp) or channels (conv nets); empty: the model's default")
    train.add_argument("--tau", type=number, default=2.0,
                       help="membrane time constant of the built-in models' LIF neurons (> 1; inf: IF neurons); "
                            "the leak is 1 - 1/tau")
    train.add_argument("--v-th", type=positive_float, default=1.0, help="firing threshold of the built-in models' "
                                                                         "LIF neurons")
    train.add_argument("--T", type=positive_int, default=6, help="time steps")
    train.add_argument("--epochs", type=positive_int, default=5, help="epochs (in all, with --resume)")
    train.add_argument("--batch-size", type=positive_int, default=128, help="training and test batch size")
    train.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    train.add_argument("--lr-milestones", type=int_list, default=(), metavar="E[,E...]",
                       help="epochs after which the learning rate is multiplied by --lr-gamma")
    train.add_argument("--lr-gamma", type=positive_float, default=0.1, help="learning-rate factor at each milestone")
    train.add_argument("--milestone-restart", action="store_true",
                       help="at each milestone, go back to the weights of the epoch with the lowest training loss "
                            "with a new Adam (the single-spike authors' trainer)")
    train.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                       help="Adam's weight decay (L2 term added to the gradient; the ASF-BP authors': 5e-4)")
    train.add_argument("--augment", choices=list(augment.AUGMENTATIONS), default=None,
                       help="augment the training images (the single-spike authors' transforms, before the encoder)")
    train.add_argument("--encoder", choices=list(encoders.ENCODERS), default=None,
                       help="input coding; none given: direct, or frames for event datasets")
    train.add_argument("--out", default=None,
                       help="run directory (none given: a new runs/<method>-<dataset>-<UTC time>)")
    train.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="auto: cuda when available")
    train.add_argument("--data-dir", default=None,
                       help="directory with the dataset's files, or its parent holding <dataset>/; "
                            "none given: $SPIKEACC_DATA, then the dataset's system path")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and subsets")
    train.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads per process (default: torch's, one per core, the faster choice "
                            "on an idle machine; a run warns when other processes keep cores busy)")
    train.add_argument("--compile", action="store_true",
                       help="run the neuron dynamics under torch.compile (compiled once per shape; "
                            "falls back to eager with a warning if compiling fails)")
    train.add_argument("--amp", action="store_true",
                       help="mixed precision: bfloat16 autocast of the products (CPU and CUDA); neuron "
                            "state stays float32")
    train.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                       help="train on a seeded random N samples")
    train.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                       help="test on a seeded random N samples")
    train.add_argument("--model-option", dest="model_options", type=key_value, action="append",
                       default=[], metavar="KEY=VALUE",
                       help="option of a ready-made model, repeatable, e.g. zero_bias=true (mlp: biases start at 0, "
                            "the single-spike authors'), fc_bias=false (lenet5, vgg7, dvs-conv: no bias, the ASF-BP "
                            "authors')")
    train.add_argument("--method-option", dest="method_options", type=key_value, action="append",
                       default=[], metavar="KEY=VALUE",
                       help="option of the method's constructor, repeatable; VALUE is read as the option's "
                            "type (a bool: true/false, yes/no, on/off, 1/0; null: None), e.g. "
                            "trainable_decay=true (single-spike), loss=ce (asf), static_once=false")
    train.add_argument("--encoder-option", dest="encoder_options", type=key_value, action="append",
                       default=[], metavar="KEY=VALUE",
                       help="option of the encoder, repeatable, e.g. scale=0.5 (poisson: rate |x|/2, the "
                            "ASF-BP authors'), rounding=floor and x_silent=null (latency: the single-spike "
                            "authors' code)")
    train.add_argument("--dataset-option", dest="dataset_options", type=key_value, action="append",
                       default=[], metavar="KEY=VALUE",
                       help="option of the dataset's loader, repeatable, e.g. bin_us=1000, channels=2 "
                            "(nmnist), split_by=time, downsample=4 (cifar10-dvs), max_time=1.0, "
                            "binary=true (shd); event data are binned into --T frames")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="spikeacc", description="Fast training of spiking neural networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sweep,export,bench}")
    train = commands.add_parser("train", help="train one method on one dataset",
                                formatter_class=DefaultsFormatter, description="Train a spiking network; writes metrics.json, curves.png, "
                                            "raster.png and checkpoint.pt into --out.")
    add_train_arguments(train)
    export = commands.add_parser("export", help="write a trained checkpoint in another format (NIR)",
                                 formatter_class=DefaultsFormatter,
                                 description="Write the LIF network of a checkpoint as a NIR graph "
                                             "(spikeacc.interop.nir).")
    export.add_argument("--format", required=True, choices=["nir"], help="file format")
    export.add_argument("checkpoint", help="checkpoint.pt written by spikeacc train")
    export.add_argument("out", help="file to write, e.g. model.nir")
    export.add_argument("--target", choices=["snntorch", "norse"], default=None,
                        help="the tool that will read the file: its dt by default (snnTorch's importer always "
                             "uses 1e-4, Norse's from_nir the dt it is given, 1e-3 by default), average pooling "
                             "as a Conv2d for Norse")
    export.add_argument("--dt", type=positive_float, default=None,
                        help="time step in NIR's time unit (NIR tau = tau * dt); default: the target's, else 1.0")
    export.add_argument("--allow-lossy", action="store_true",
                        help="write neurons whose reset or firing rule differs from NIR's (hard reset, fires on >) "
                             "anyway (the difference is recorded in the file's metadata)")
    commands.add_parser("sweep", help="train over a grid of train options (lists like --T 2,4,8), seeds and "
                                      "workers, resumable; spikeacc sweep --help lists its options")
    commands.add_parser("bench", help="run the benchmarks (python -m benchmarks) of a source checkout; "
                                      "all further arguments are passed on (spikeacc bench --help lists them)")
    return parser


def run_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .allocator import keep_freed_memory
    from .cores import LoadMeter
    from .data import DatasetError
    from .trainer import ResumeRefused, TrainConfig, Trainer, TrainingDiverged, TrainingInterrupted

    options = {key: value for key, value in vars(args).items() if key != "command"}
    config = TrainConfig(**options)
    keep_freed_memory()  # large tensors are not page-faulted afresh every step (allocator.py)
    load = LoadMeter()  # measures while the trainer sets up
    try:
        trainer = Trainer(config)
    except ResumeRefused as err:
        fail_once(str(err))
    except (ValueError, DatasetError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted before training started", EXIT_INTERRUPTED)
    warn_if_oversubscribed(trainer, load)
    processes = f", {trainer.group.world_size} processes" if trainer.group.world_size > 1 else ""
    trainer.log(f"{config.method} on {trainer.split.name} ({len(trainer.train_idx)} train / "
                f"{len(trainer.test_idx)} test), model {config.model}, T={config.T}, "
                f"device {trainer.device}{processes}, out {config.out}")
    try:
        trainer.run()
    except TrainingDiverged as err:
        write_figures(trainer)
        fail(str(err), EXIT_DIVERGED)
    except TrainingInterrupted as err:
        write_figures(trainer)
        fail(str(err), EXIT_INTERRUPTED)
    except distributed.DistributedError as err:
        fail(str(err), EXIT_PEER_LOST)
    except ValueError as err:
        fail(str(err))
    write_figures(trainer)
    distributed.shutdown()
    return 0


def warn_if_oversubscribed(trainer, load) -> None:
    """Warn once (rank 0) if a CPU run's torch threads exceed the cores that other processes
    left free while the trainer set up (``load``, a cores.LoadMeter)."""
    import torch

    if trainer.device.type == "cpu" and trainer.group.is_main:
        oversubscribed = load.oversubscribed(torch.get_num_threads())
        if oversubscribed:
            warn(oversubscribed)


def run_export(args: argparse.Namespace) -> int:
    try:
        from .interop.nir import CONSUMERS

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nir_graph = export_run(args.checkpoint, args.out, args.dt, args.allow_lossy, args.target)
    except (ImportError, ValueError) as err:
        fail(str(err))
    for warning in caught:
        sys.stderr.write(f"spikeacc: warning: {warning.message}\n")
    dt = nir_graph.metadata["dt"]
    print(f"wrote {args.out}: {len(nir_graph.nodes)} NIR nodes, dt={dt}"
          + (" (lossy: see its metadata)" if "lossy" in nir_graph.metadata else ""))
    for name, (consumer_dt, how) in CONSUMERS.items():
        verdict = "reads it as written" if consumer_dt == dt or name == "norse" else f"would misread dt={dt}"
        print(f"  {name}: {how}; {verdict}" + (f" (pass dt={dt})" if name == "norse" else ""))
    return 0


def export_run(checkpoint: str, out: str, dt: float | None, allow_lossy: bool, target: str | None):
    """The network of a ``spikeacc train`` checkpoint written to ``out`` as a NIR graph;
    ValueError for checkpoints of methods whose neurons are not the network's (asf, single-spike)."""
    from .interop.nir import export, save
    from .methods import LIF_METHODS
    from .run_dir import load_run

    run = load_run(checkpoint)
    if not isinstance(run.method, LIF_METHODS):
        raise ValueError(f"{checkpoint} was trained with method {run.config['method']!r}, which runs its own neurons "
                         "at the LIF positions, not the network's; only checkpoints of the LIF-based methods "
                         "(bptt, ottt, sr, saf) export to NIR")
    nir_graph = export(run.net, dt=dt, allow_lossy=allow_lossy, target=target)
    nir_graph.metadata["method"] = run.config["method"]
    save(nir_graph, out)
    return nir_graph


def write_figures(trainer) -> None:
    """curves.png of the finished epochs and, for LIF-based methods, raster.png of one test
    sample; says which files the run wrote."""
    from .report import plot_curves, save_raster
    from .trainer import batches

    config, out = trainer.config, trainer.out
    if not trainer.history or not trainer.group.is_main:
        return
    plot_curves(trainer.history, out / "curves.png", f"{config.method}, {config.dataset}, T={config.T}")
    x, _ = next(batches(trainer.split.test, trainer.test_idx[:1], 1))
    raster = out / "raster.png"
    written = f"wrote {trainer.checkpoint_path}, {out / 'metrics.json'}, {out / 'curves.png'}"
    if save_raster(trainer.net, trainer.method, trainer.encoder(x.to(trainer.device)), raster,
                   f"{config.method}: spikes of test sample {int(trainer.test_idx[0])}"):
        print(f"{written}, {raster}")
    else:
        print(f"{written} (no raster: {config.method} is not LIF-based)")


def run_sweep(argv: Sequence[str]) -> int:
    from .experiments.sweep import main as sweep

    try:
        return sweep(argv)
    except ValueError as err:
        fail(str(err))


def benchmarks_root() -> Path | None:
    """The source checkout holding benchmarks/: the repository of this package, else the cwd."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "benchmarks" / "__main__.py").is_file():
            return root
    return None


def run_bench(extra: Sequence[str]) -> int:
    root = benchmarks_root()
    if root is None:
        fail("benchmarks/ not found (it ships with the source repository, not the installed package); "
             "run `spikeacc bench` from a checkout of spikeacc")
    env = {**os.environ, "SPIKEACC_BENCH_PROG": "spikeacc bench"}  # benchmarks.PROG: their help names us
    if (root / "src" / "spikeacc").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"), env.get("PYTHONPATH")]))
    return subprocess.call([sys.executable, "-m", "benchmarks", *extra], cwd=root, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # everything after "bench" (--help included) goes to the benchmarks
        return run_bench(argv[1:])
    if argv[:1] == ["sweep"]:  # lists of train options: its own parser (spikeacc.experiments)
        return run_sweep(argv[1:])
    args = build_parser().parse_args(argv)
    return run_export(args) if args.command == "export" else run_train(args)


if __name__ == "__main__":
    sys.exit(main())
