"""What the online methods share (OTTT, SAF-E, SAF-F, Spike Representation).

They run the network one step at a time on *leaky sums* of each source's values
(the input and every neuron site): OTTT's presynaptic trace a_hat[t] = lam a_hat[t-1] + s[t]
(OTTT Eq. 8), SAF's accumulated spike A[t] (the same recurrence), SR's weighted rate
A[T] / c[T]. The leak lam is the membrane leak of the neuron that *reads* the sum, since
u[t] = sum_k lam^(t-k) I[k] unrolls the reader's membrane; the readout reads its sources
with ``readout_leak``. A source read by neurons with different leaks keeps one sum per
leak (with one shared leak, the usual case, one sum per source).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import CallContext, Pass, Program
from .base import Inference, Inputs, Method, per_sample, readout_leak


class Leaks:
    """Which leaks each source is summed with: ``of_source[s]`` (a set of leaks);
    ``site[i]``, the leak of site node i; ``readout``, lambda_out; ``hidden``, the
    distinct leaks of the sites. ``own``: also sum every site's spikes with its own leak
    (SAF's reset term lam V_th A[t-1])."""

    def __init__(self, program: Program, own: bool = False) -> None:
        self.input = program.input
        self.site = {site.index: site.module.lam for site in program.sites}
        self.readout = readout_leak(program)
        self.hidden = sorted(set(self.site.values()))
        self.of_source: dict[int, set[float]] = {s: set() for s in (program.input, *self.site)}
        for site in program.sites:
            for source in program.sources_of[site.input]:
                self.of_source[source].add(self.site[site.index])
            if own:
                self.of_source[site.index].add(self.site[site.index])
        for source in program.sources_of[program.output]:
            self.of_source[source].add(self.readout)


Sums = dict[tuple[int, float], torch.Tensor]  # (source node, leak) -> leaky sum [B, ...]


def accumulate(previous: Sums, source: int, value: torch.Tensor, leaks: Leaks, into: Sums) -> None:
    """into[(source, lam)] = lam * previous[(source, lam)] + value, for each leak of the source."""
    for lam in leaks.of_source[source]:
        old = previous.get((source, lam))
        into[(source, lam)] = value if old is None else lam * old + value


def publish(sums: Sums, source: int, leaks: Leaks, passes: dict[float, Pass], readout: Pass | None,
            input_scale: Callable[[float], float] | None = None) -> None:
    """Set the source's sums as its value in the pass of each leak (and the readout's).
    ``input_scale(lam)``: the input's sum with leak lam is that times the static input
    (``Pass.set_input``)."""
    for lam in leaks.of_source[source]:
        targets = ([passes[lam]] if lam in passes else []) + ([readout] if readout is not None and lam == leaks.readout
                                                                 else [])
        for target in targets:
            if source == leaks.input:
                target.set_input(sums[(source, lam)], None if input_scale is None else input_scale(lam))
            else:
                target.set(source, sums[(source, lam)])


class OnlineMethod(Method):
    """Methods that backpropagate each step's loss L[t] = CE(o[t], y) / T at once, with
    every temporal dependency cut: memory is constant in T. Subclasses give ``start``
    (the state before step 0) and ``forward_step``.

    ``update_every_step``: call ``optimizer.step()`` after every time step (OTTT-O)
    instead of once per batch.
    """

    update_every_step = False

    def start(self, program: Program) -> object:
        raise NotImplementedError

    def forward_step(self, program: Program, ctx: CallContext, inputs: Inputs, t: int, state
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Step t (0-based): o[t] [B, K] with graph, and the sites' spikes (detached);
        updates ``state`` (detached) in place."""
        raise NotImplementedError

    def _run(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
             optimizer: torch.optim.Optimizer | None) -> tuple[torch.Tensor, torch.Tensor]:
        program, inputs, ctx = self.setup(net, x, y)
        state = self.start(program)
        loss, logits = 0.0, 0.0  # become tensors on the input device at t = 0
        for t in range(self.T):
            out, _ = self.forward_step(program, ctx, inputs, t, state)
            loss_t = F.cross_entropy(out, y) / self.T
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            loss_t.backward()
            ctx.clear_statics()  # their graph is spent (and with an update, their parameters are old)
            if optimizer is not None:
                ctx.flush()
                self.before_update()
                optimizer.step()
                ctx.clear_input_values()
            loss = loss + loss_t.detach()
            logits = logits + out.detach() / self.T
        ctx.flush()
        return loss, logits

    def loss_and_grad(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(net, x, y, None)

    def step(self, net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.update_every_step:
            return super().step(net, optimizer, x, y)
        return self._run(net, x, y, optimizer)

    @torch.no_grad()
    def online_inference(self, net: nn.Module, x: torch.Tensor) -> Inference:
        """Run this method's own forward: logits = mean_t o[t], spikes counted per site."""
        program, inputs, ctx = self.setup(net, x)
        state = self.start(program)
        logits, counts = 0.0, [0.0] * len(program.sites)
        for t in range(self.T):
            out, spikes = self.forward_step(program, ctx, inputs, t, state)
            logits = logits + out / self.T
            counts = [c + per_sample(s) for c, s in zip(counts, spikes)]
        return Inference(logits, counts)
