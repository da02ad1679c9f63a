"""Time to accuracy: spikeacc's methods against SpikingJelly's and snnTorch's BPTT, each
training the same network in its own loop until a target test accuracy.

Every contender starts from the same weights (MLP 784-800-10, LIF tau = 2, V_th = 1, the
sigmoid surrogate; the peers' twins of ``peers.py``, the ones whose loss and gradients are
checked equal there), trains on the same global batches of Fashion-MNIST (one shuffle per
epoch, shared) with Adam at the same learning rate, T and loss, L = (1/T) sum_t CE(o[t], y)
(SAF-F, SR and ASF-BP train their own losses). The peers run their idiomatic loops:
SpikingJelly's multi-step network on x expanded over T with ``reset_net`` after every batch,
snnTorch's loop over T of its tutorials. Epochs go round-robin over the contenders in one
process (epoch 1 of each, then epoch 2, ...), so drift on a shared machine hits all alike;
only the training steps are timed, the test evaluation after every epoch is not. Reported:
the seconds (and epochs) each contender needed to first reach the target, and their ratios.

    python -m benchmarks race [--quick] [--target 0.87] [--max-epochs 10] [--threads N] [--out DIR | --update-results]

``--quick`` runs the 8x8 digits (MLP 64-128-10, target 0.85) in seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from spikeacc import LIF, methods
from spikeacc.data import load_dataset
from spikeacc.methods.base import per_step_ce
from spikeacc.models import MLP

from .common import Target, base_parser, machine, markdown_table, report, setup
from .peers import SnnTorchMLP, import_peers, spikingjelly_twin, version

NAME = "race"
METHODS = ("bptt", "saf-f", "saf-e", "ottt-a", "sr", "asf")
T, LEARNING_RATE, BATCH, SEED = 6, 1e-3, 128, 0


@dataclass(eq=False)
class Runner:
    """One contender: a training step on a batch and a prediction (logits) of the test set."""

    library: str
    method: str
    step: Callable[[torch.Tensor, torch.Tensor], None]
    predict: Callable[[torch.Tensor], torch.Tensor]
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # per epoch: cumulative seconds, test accuracy

    @property
    def label(self) -> str:
        return f"{self.library} {self.method}"


def spikeacc_runner(name: str, net: torch.nn.Module) -> Runner:
    method = methods.get(name, T=T)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    return Runner("spikeacc", name, lambda x, y: method.step(net, optimizer, x, y), lambda x: method.predict(net, x))


def spikingjelly_runner(sj, net: torch.nn.Module) -> Runner:
    twin = spikingjelly_twin(sj, net, online=False)
    optimizer = torch.optim.Adam(twin.parameters(), lr=LEARNING_RATE)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        per_step_ce(twin(x.unsqueeze(0).expand(T, *x.shape)), y).backward()
        optimizer.step()
        sj.functional.reset_net(twin)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = twin(x.unsqueeze(0).expand(T, *x.shape)).mean(0)
        sj.functional.reset_net(twin)
        return logits

    return Runner("spikingjelly", "bptt", step, predict)


def snntorch_runner(snn, net: torch.nn.Module) -> Runner:
    twin = SnnTorchMLP(snn, net)
    optimizer = torch.optim.Adam(twin.parameters(), lr=LEARNING_RATE)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        per_step_ce(twin(x, T), y).backward()
        optimizer.step()

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return twin(x, T).mean(0)

    return Runner("snntorch", "bptt", step, predict)


def runners(hidden: int, features: int, sample_shape: tuple[int, ...]) -> tuple[list[Runner], dict[str, str]]:
    """spikeacc's methods and the installed peers, every one on a copy of the same initial weights."""
    def network() -> torch.nn.Module:
        torch.manual_seed(SEED)
        return MLP(features, [hidden], 10, neuron=LIF(tau=2.0, v_th=1.0), sample_shape=sample_shape)

    found = [spikeacc_runner(name, network()) for name in METHODS]
    peers, missing = import_peers()
    if "spikingjelly" in peers:
        found.append(spikingjelly_runner(peers["spikingjelly"], network()))
    if "snntorch" in peers:
        found.append(snntorch_runner(peers["snntorch"], network()))
    for library, why in missing.items():
        print(f"[{NAME}] skip {library}: cannot import it ({why}); pip install --no-deps -r tests/peers.txt")
    return found, missing


def accuracy(runner: Runner, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = sum(int((runner.predict(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


def race(contenders: list[Runner], train, test, target: float, max_epochs: int) -> None:
    """Epochs round-robin until every contender has reached ``target`` or ``max_epochs``."""
    x_train, y_train = train
    x_test, y_test = test
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(SEED + epoch))
        batches = [(x_train[i], y_train[i]) for i in order.split(BATCH)]
        for runner in contenders:
            if runner.history and runner.history[-1]["test_acc"] >= target:
                continue
            start = time.perf_counter()
            for x, y in batches:
                runner.step(x, y)
            runner.seconds += time.perf_counter() - start
            runner.history.append({"epoch": epoch, "seconds": runner.seconds,
                                   "test_acc": accuracy(runner, x_test, y_test)})
            print(f"[{NAME}] {runner.label} epoch {epoch}: test {runner.history[-1]['test_acc']:.2%}, "
                  f"{runner.seconds:.1f} s of training", flush=True)
        if all(r.history[-1]["test_acc"] >= target for r in contenders):
            return


def reached(runner: Runner, target: float) -> dict | None:
    return next((record for record in runner.history if record["test_acc"] >= target), None)


def build_parser():
    parser = base_parser(NAME, "seconds of training to a target test accuracy, spikeacc against the peers")
    parser.add_argument("--target", type=float, default=None, help="test accuracy to reach (default 0.87; "
                                                                     "--quick 0.85)")
    parser.add_argument("--max-epochs", type=int, default=10, help="stop a contender after this many epochs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is None:
        args.threads = 2
    device = setup(args)
    split = load_dataset("digits" if args.quick else "fashion-mnist")
    target = args.target or (0.85 if args.quick else 0.87)
    train, test = split.train.tensors, split.test.tensors
    features = int(torch.tensor(split.sample_shape).prod())
    contenders, missing = runners(128 if args.quick else 800, features, split.sample_shape)
    race(contenders, train, test, target, args.max_epochs)
    rows, results = [], []
    for runner in contenders:
        first = reached(runner, target)
        results.append({"library": runner.library, "version": version(runner.library), "method": runner.method,
                        "reached": first, "history": runner.history})
        rows.append((runner.label, f"{first['seconds']:.1f}" if first else f"not in {len(runner.history)} epochs",
                     first["epoch"] if first else "—", f"{runner.history[-1]['test_acc']:.2%}"))
    targets = ratio_targets(contenders, target)
    payload = {"machine": machine(device), "dataset": split.name, "target": target, "T": T, "batch": BATCH,
               "lr": LEARNING_RATE, "results": results, "missing": missing, "targets": targets}
    table = markdown_table(["contender", "seconds to target", "epochs", "last test accuracy"], rows)
    how = (f"{split.name}, MLP {features}-{128 if args.quick else 800}-10, T = {T}, batch {BATCH}, Adam "
           f"{LEARNING_RATE}, target {target:.0%}; epochs round-robin, training steps timed, "
           f"torch threads: {args.threads or torch.get_num_threads()} (see the module docstring).")
    return report(args, NAME, payload, f"time to {target:.0%} test accuracy", how, table)


def ratio_targets(contenders: list[Runner], target: float) -> list[Target]:
    """spikeacc's fastest method and its BPTT against each peer's BPTT (informational: no bound was set)."""
    times = {r.label: reached(r, target)["seconds"] for r in contenders if reached(r, target)}
    ours = {label: seconds for label, seconds in times.items() if label.startswith("spikeacc")}
    found = []
    for peer in ("spikingjelly bptt", "snntorch bptt"):
        if peer in times and ours:
            best = min(ours, key=ours.get)
            found.append(Target(f"{best} / {peer}, seconds to {target:.0%}", "< 1",
                                ours[best] / times[peer], ours[best] < times[peer]))
            if "spikeacc bptt" in ours:
                found.append(Target(f"spikeacc bptt / {peer}, seconds to {target:.0%}", "< 1",
                                    ours["spikeacc bptt"] / times[peer], ours["spikeacc bptt"] < times[peer]))
    return found
