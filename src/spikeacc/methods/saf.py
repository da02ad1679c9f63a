"""Spike accumulation forwarding, SAF (Saiin et al., TMLR 2024; methods.md "SAF").

Layers forward the accumulated spike A[t] = lam * A[t-1] + s[t] instead of s[t].
Unrolling the LIF neuron gives, exactly (the paper's Eqs. for U-hat and s in Sec. 4):

    u_l[t] = W_l A_{l-1}[t] + c[t] b_l - lam * V_th * A_l[t-1],   c[t] = sum_{k<t} lam^k
    s_l[t] = H(u_l[t] - V_th),   A_l[t] = lam * A_l[t-1] + s_l[t]

so one product W A[t] per layer and step carries both the value and the weight
gradient (OTTT needs W s[t] and W a_hat[t]). The spikes are those of the LIF network,
so SAF-trained weights run unchanged in ``spiking_inference``.

* SAF-E: L = (1/T) sum_t CE(o[t], y), o[t] = R[t] - lam R[t-1] + b_out with
  R[t] = W_out A_L[t]; A[t-1] and R[t-1] are detached, and the gradient equals OTTT's
  (the paper's Theorem 1).
* SAF-F: L = CE(W_out A_L[T] / c[T] + b_out, y), the weighted-rate readout; steps
  1..T-1 run without a graph, and one backward follows step T. With the surrogate
  taken as the Spike Representation derivative (``surrogate="sr"``) its gradient is
  SR's, scaled by V_th per layer (the paper's Theorem 2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import SpikingNet
from ..neurons import accumulation_weight
from .base import Inference, Inputs, Method, OnlineMethod, per_sample, replace_grad


def saf_layers(net: SpikingNet, acc_in: torch.Tensor, acc_prev: list, c_t: float,
               sr_surrogate: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One SAF step through the hidden layers.

    acc_in: accumulated input A_0[t] [B, ...]; acc_prev: A_l[t-1] per hidden layer
    (constants; 0.0 before the first step). Returns (A_l[t] per layer, s_l[t] per layer).
    With ``sr_surrogate`` the spike's derivative is SR's, d s / d U_hat := 1[0 < U_hat / c[t] < V_th].
    """
    neuron, lam = net.neuron, net.neuron.lam
    h, accs, spikes = acc_in, [], []
    for synapse, a_prev in zip(net.hidden, acc_prev):
        u_hat = synapse(h, bias_scale=c_t)  # W A_{l-1}[t] + c[t] b
        spike_t = neuron.fire(u_hat - lam * neuron.v_th * a_prev)
        h = lam * a_prev + spike_t
        if sr_surrogate:  # dA[t]/dU_hat = ds[t]/dU_hat := SR's clamp derivative
            h = replace_grad(h, torch.clamp(u_hat, 0.0, c_t * net.neuron.v_th))
        accs.append(h)
        spikes.append(spike_t)
    return accs, spikes


@torch.no_grad()
def accumulated_trajectory(net: SpikingNet, inputs: Inputs, steps: int
                           ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run SAF without a graph for ``steps`` steps, one step at a time so that memory
    does not grow with T.

    Returns ([A_0, A_1, ..., A_L] at the last step, each [B, ...]; spikes per sample per
    hidden layer, each [B]). These are the LIF network's spikes, so Spike
    Representation uses this too.
    """
    lam = net.neuron.lam
    acc_in = torch.zeros_like(inputs.at(0))  # [B, ...]
    accs: list = [0.0] * len(net.hidden)
    counts: list = [0.0] * len(net.hidden)
    for t in range(steps):
        acc_in = lam * acc_in + inputs.at(t)
        accs, spikes = saf_layers(net, acc_in, accs, accumulation_weight(lam, t + 1))
        counts = [n + per_sample(s) for n, s in zip(counts, spikes)]
    return [acc_in, *accs], counts


def weighted_readout(net: SpikingNet, acc_last: torch.Tensor, c_T: float) -> torch.Tensor:
    """W_out A_L[T] / c[T] + b_out: readout of the weighted firing rate, [B, K]."""
    return net.readout(acc_last, bias_scale=c_T) / c_T


class SAFE(OnlineMethod):
    """SAF-E: a loss at every step, gradient equal to OTTT-A's."""

    name = "saf-e"

    def forward_step(self, net: SpikingNet, inputs: Inputs, t: int, state: list | None):
        lam = net.neuron.lam
        x_t = inputs.at(t)
        if state is None:  # [A_0, A_1..A_L, R]; zeros are materialised lazily
            state = [torch.zeros_like(x_t)] + [0.0] * (len(net.hidden) + 1)
        acc_in = lam * state[0] + x_t
        accs, spikes = saf_layers(net, acc_in, state[1:-1], accumulation_weight(lam, t + 1))
        r_t = net.readout(accs[-1] if accs else acc_in, bias_scale=0.0)  # W_out A_L[t]
        out = r_t - lam * state[-1]
        if net.readout.op.bias is not None:
            out = out + net.readout.op.bias
        new_state = [acc_in] + [a.detach() for a in accs] + [r_t.detach()]
        return out, new_state, [s.detach() for s in spikes]

    def infer(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        return self.online_inference(net, x)


class SAFF(Method):
    """SAF-F: loss on the final accumulated output; T no-graph steps, one backward.

    ``surrogate``: "neuron" uses the LIF's surrogate at u[T] - V_th; "sr" uses the
    Spike Representation derivative 1[0 < I_avg < V_th] (Theorem 2's setting).
    """

    name = "saf-f"

    def __init__(self, T: int, surrogate: str = "neuron") -> None:
        super().__init__(T)
        if surrogate not in ("neuron", "sr"):
            raise ValueError(f"SAF-F surrogate must be 'neuron' or 'sr', got {surrogate!r}")
        self.sr_surrogate = surrogate == "sr"

    def loss_and_grad(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, lam, T = self.inputs(net, x, y), net.neuron.lam, self.T
        if T > 1:
            prev, _ = accumulated_trajectory(net, inputs, T - 1)
        else:
            prev = [torch.zeros_like(inputs.at(0))] + [0.0] * len(net.hidden)
        acc_in = lam * prev[0] + inputs.at(T - 1)
        c_T = accumulation_weight(lam, T)
        accs, _ = saf_layers(net, acc_in, prev[1:], c_T, self.sr_surrogate)
        logits = weighted_readout(net, accs[-1] if accs else acc_in, c_T)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return loss.detach(), logits.detach()

    def infer(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        inputs = self.inputs(net, x)
        with torch.no_grad():
            finals, counts = accumulated_trajectory(net, inputs, self.T)
            logits = weighted_readout(net, finals[-1], accumulation_weight(net.neuron.lam, self.T))
        return Inference(logits, counts)
