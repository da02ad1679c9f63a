"""The op table: how each op between neurons is evaluated, and which ops are affine.

SAF, OTTT, Spike Representation and ASF-BP run a network's synapses on values that are
not spikes (leaky sums, traces, rates, counts). That is exact only where every op
between neurons is affine in its input, f(x) = L(x) + b, and these methods need the
constant term b scaled: SAF applies W A[t] + c[t] b to the accumulated spike A[t], ASF-BP
W O + T b to spike counts. An ``Op`` evaluates one node with a ``Bias``: every constant
term (a Linear or conv bias, a BatchNorm shift, a constant added) enters scaled by it.
Scaling every constant term of a chain of affine ops scales the chain's constant term,
so the methods never need to know how a synapse is built.

Affine ops: Linear, Conv1d/2d/3d, AvgPool, AdaptiveAvgPool, Flatten, Unflatten, Identity,
ZeroPad, Upsample, PixelShuffle, Dropout (one mask per batch, shared by all time steps,
as SpikingJelly's multi-step Dropout), BatchNorm in eval mode (running statistics), and
the functions add/sub, mul/div by a constant, cat (not along the batch dim), flatten,
reshape/view/permute/transpose/(un)squeeze, mean/sum, indexing, F.linear/conv (so scaled
weight standardisation written as F.conv2d(x, standardised_weight, bias) is affine too),
avg pooling, interpolate and zero padding. Anything else (MaxPool, ReLU, BatchNorm in
training mode, a product of two data tensors, ...) is evaluated as it is, for the
methods that accept any op (BPTT, single-spike).
"""
from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .spike_products import spike_product


@dataclass(frozen=True)
class Bias:
    """How constant terms enter: ``value * b`` forward; the gradient reaching b is
    ``grad`` times the op's output gradient (``None``: the same as ``value``)."""

    value: float = 1.0
    grad: float | None = None

    @property
    def identity(self) -> bool:
        return self.value == 1.0 and self.grad in (None, 1.0)

    def apply(self, constant: Any) -> Any:
        """The scaled constant term (a tensor, a number, or None)."""
        if constant is None or self.identity:
            return constant
        if self.grad is None or self.grad == self.value or not isinstance(constant, torch.Tensor):
            return constant * self.value
        return constant * self.grad + (self.value - self.grad) * constant.detach()


IDENTITY = Bias()


# --- observers (profiling.count_macs) ----------------------------------------------------

_OBSERVERS: list[Callable[[str, torch.Tensor, int], None]] = []


@contextlib.contextmanager
def observe(callback: Callable[[str, torch.Tensor, int], None]) -> Iterator[None]:
    """Call ``callback(name, output, fan_in)`` after every weighted op (Linear, conv)
    any method evaluates inside the block; name is the op's module."""
    _OBSERVERS.append(callback)
    try:
        yield
    finally:
        _OBSERVERS.remove(callback)


def _notify(name: str, output: torch.Tensor, weight: torch.Tensor) -> None:
    for callback in _OBSERVERS:
        callback(name, output, weight[0].numel())


# --- the ops ---------------------------------------------------------------------------------

class Op:
    """Evaluates one data node. ``affine``: affine in its data inputs (structurally);
    ``not_affine_now`` may still refuse it in the module's current state."""

    affine = True
    module: nn.Module | None = None  # the called module (call_module nodes)

    def __init__(self, fn: Callable, name: str, index: int) -> None:
        self.fn, self.name, self.index = fn, name, index

    def __call__(self, args: tuple, kwargs: dict, bias: Bias, ctx) -> Any:
        return self.fn(*args, **kwargs)

    def not_affine_now(self) -> str | None:
        """Why this op is not affine in its module's current state (None: it is)."""
        return None if self.affine else "is not affine in its input"


class NonAffine(Op):
    affine = False


class LinearOp(Op):
    """Linear in its one data input, no constant term (pooling, reshapes, indexing)."""


class Sum(Op):
    """add / sub: the constant operands (positions ``constant_slots``) are constant terms."""

    def __init__(self, fn: Callable, name: str, index: int, constant_slots: tuple[int, ...]) -> None:
        super().__init__(fn, name, index)
        self.constant_slots = constant_slots

    def __call__(self, args, kwargs, bias, ctx):
        if self.constant_slots and not bias.identity:
            args = tuple(bias.apply(a) if i in self.constant_slots else a for i, a in enumerate(args))
        return self.fn(*args, **kwargs)


class Cat(Op):
    """torch.cat: constant tensors among the pieces are constant terms."""

    def __init__(self, fn: Callable, name: str, index: int, constant_pieces: tuple[int, ...]) -> None:
        super().__init__(fn, name, index)
        self.constant_pieces = constant_pieces

    def __call__(self, args, kwargs, bias, ctx):
        if self.constant_pieces and not bias.identity:
            pieces = [bias.apply(p) if i in self.constant_pieces else p for i, p in enumerate(args[0])]
            args = (pieces, *args[1:])
        return self.fn(*args, **kwargs)


class WeightedFn(Op):
    """F.linear / F.convNd(x, weight, bias, ...): the bias argument is the constant term."""

    def __call__(self, args, kwargs, bias, ctx):
        if not bias.identity:
            if len(args) > 2:
                args = (*args[:2], bias.apply(args[2]), *args[3:])
            elif "bias" in kwargs:
                kwargs = {**kwargs, "bias": bias.apply(kwargs["bias"])}
        out = self.fn(*args, **kwargs)
        if _OBSERVERS:
            _notify(self.name, out, args[1] if len(args) > 1 else kwargs["weight"])
        return out


class ModuleOp(Op):
    def __init__(self, module: nn.Module, name: str, index: int) -> None:
        super().__init__(module, name, index)
        self.module = module


class WeightedModule(ModuleOp):
    """A Linear or conv module: W x + b, the bias scaled (``with_bias``); on spikes that the
    context marks (``CallContext.spike_inputs``), keeping them as bits (``spike_product``)."""

    def __call__(self, args, kwargs, bias, ctx):
        m = self.module
        if not bias.identity:
            out = self.with_bias(args[0], bias.apply(m.bias))
        else:
            out = spike_product(m, args[0]) if self.index in ctx.spike_inputs else m(args[0])
        if _OBSERVERS:
            _notify(self.name, out, m.weight)
        return out

    def with_bias(self, x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class DenseModule(WeightedModule):
    def with_bias(self, x, b):
        return F.linear(x, self.module.weight, b)


class ConvModule(WeightedModule):
    def with_bias(self, x, b):
        return self.module._conv_forward(x, self.module.weight, b)


class BatchNormModule(ModuleOp):
    """Affine with running statistics (eval mode): x * gamma / sigma + (beta - mu gamma / sigma)."""

    def __call__(self, args, kwargs, bias, ctx):
        m, x = self.module, args[0]
        if bias.identity:
            return m(x)
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight
        shift = -m.running_mean * scale
        if m.bias is not None:
            shift = shift + m.bias
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(shape) + bias.apply(shift).view(shape)

    def not_affine_now(self) -> str | None:
        m = self.module
        if m.training:
            return "is not affine in training mode (batch statistics); call net.eval() or fold it into the conv"
        if m.running_mean is None:
            return "has no running statistics (track_running_stats=False), so it is not affine"
        return None


class DropoutModule(ModuleOp):
    """One mask per batch (``ctx.masks``), the same at every time step: for a value
    [S*B, ...] holding S steps, the [B, ...] mask multiplies each step. Channel dropout
    (Dropout1d/2d/3d) masks [B, C, 1, ...]."""

    def __call__(self, args, kwargs, bias, ctx):
        m, x = self.module, args[0]
        if not m.training or m.p == 0.0:
            return x
        mask = ctx.masks.get(self.index)
        if mask is None:
            channelwise = type(m) is not nn.Dropout
            shape = (ctx.batch, *x.shape[1:]) if not channelwise else \
                (ctx.batch, x.shape[1]) + (1,) * (x.dim() - 2)
            keep = 1.0 - m.p
            mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)
            ctx.masks[self.index] = mask
        return (x.view(-1, ctx.batch, *x.shape[1:]) * mask).view(x.shape)  # [S, B, ...] * [B, ...]


class _Pool2x2(torch.autograd.Function):
    """avg_pool2d(x, 2) of x [N, C, H, W] (H, W even, contiguous) as the sum of the four
    strided views of its 2x2 blocks, in avg_pool2d's order (row by row), divided by 4: the
    same values bit for bit; the backward writes grad / 4 into the four views, as
    avg_pool2d_backward does (tests/test_graph.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        blocks = x.view(n, c, h // 2, 2, w // 2, 2)
        ctx.shape = x.shape
        return (blocks[:, :, :, 0, :, 0] + blocks[:, :, :, 0, :, 1] + blocks[:, :, :, 1, :, 0]
                + blocks[:, :, :, 1, :, 1]) / 4

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = ctx.shape
        grad_x = grad.new_empty(ctx.shape)
        blocks, share = grad_x.view(n, c, h // 2, 2, w // 2, 2), grad / 4
        for row in (0, 1):
            for column in (0, 1):
                blocks[:, :, :, row, :, column] = share
        return grad_x


class AvgPool2x2(ModuleOp):
    """nn.AvgPool2d(2) (kernel and stride 2, no padding): on a contiguous CPU tensor [N, C,
    H, W] with H and W even, ``_Pool2x2``, which measured about twice as fast as
    avg_pool2d's CPU kernel, forward and backward (issue 19); otherwise the module."""

    def __call__(self, args, kwargs, bias, ctx):
        x = args[0]
        if x.device.type != "cpu" or x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2 or not x.is_contiguous():
            return self.module(x)
        return _Pool2x2.apply(x)


def _pool2x2(module: nn.Module) -> bool:
    pair = lambda value: tuple(value) if isinstance(value, (tuple, list)) else (value, value)  # noqa: E731
    return (type(module) is nn.AvgPool2d and pair(module.kernel_size) == (2, 2) and pair(module.stride) == (2, 2)
            and pair(module.padding) == (0, 0) and not module.ceil_mode and module.divisor_override is None)


# --- classification ------------------------------------------------------------------------

def _optional(*names: str) -> tuple[type, ...]:
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n))


LINEAR_MODULES = _optional(
    "Identity", "Flatten", "Unflatten", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "Upsample",
    "PixelShuffle", "PixelUnshuffle")
DENSE_MODULES = (nn.Linear,)
CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORM_MODULES = (nn.modules.batchnorm._BatchNorm,)
DROPOUT_MODULES = _optional("Dropout", "Dropout1d", "Dropout2d", "Dropout3d")
AVGPOOL_MODULES = _optional("AvgPool1d", "AvgPool2d", "AvgPool3d")

LINEAR_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.mean, torch.sum, torch.neg, torch.clone, operator.neg, operator.pos, operator.getitem,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.interpolate, F.pixel_shuffle, F.pixel_unshuffle, F.pad,
}
AVGPOOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d}
LINEAR_METHODS = {"view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous",
                  "squeeze", "unsqueeze", "mean", "sum", "neg", "clone"}
# out-of-place forms of the in-place operators: an op never modifies a stored value
_SUM_FUNCTIONS = {operator.add: operator.add, operator.iadd: operator.add, operator.sub: operator.sub,
                  operator.isub: operator.sub, torch.add: torch.add, torch.sub: torch.sub}
_MUL_FUNCTIONS = {operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: torch.mul}
_DIV_FUNCTIONS = {operator.truediv: operator.truediv, operator.itruediv: operator.truediv,
                  torch.div: torch.div, torch.true_divide: torch.true_divide}
CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
WEIGHTED_FUNCTIONS = {F.linear, F.conv1d, F.conv2d, F.conv3d}
META_METHODS = {"size", "dim"}
META_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}


def is_meta(op: str, target: Any, args: tuple) -> bool:
    """Does this node of data read only metadata (x.size(0), x.shape)?"""
    if op == "call_method":
        return target in META_METHODS
    return op == "call_function" and target is getattr and len(args) > 1 and args[1] in META_ATTRIBUTES


def method_caller(name: str) -> Callable:
    def call(self_value, *args, **kwargs):
        return getattr(self_value, name)(*args, **kwargs)
    return call


def make_op(op: str, target: Any, args: tuple, kwargs: dict, is_data: Callable[[Any], bool],
            module: nn.Module | None, name: str, index: int) -> Op:
    """The Op of a node of data. ``is_data(arg)`` says whether an argument (an fx arg,
    possibly nested) holds data; ``module`` is the called module for call_module."""
    if op == "call_module":
        found = _module_op(module, name, index)
        found.module = module
        return found
    fn = method_caller(target) if op == "call_method" else target
    only_first = bool(args) and is_data(args[0]) and not any(
        is_data(a) for a in (*args[1:], *kwargs.values()))
    if op == "call_method":
        if target in LINEAR_METHODS and only_first:
            return LinearOp(fn, name, index)
        if target in ("add", "sub"):
            return _sum(fn, name, index, args, kwargs, is_data)
        if target == "mul":
            return _product(fn, name, index, args, kwargs, is_data, numerator_only=False)
        if target == "div":
            return _product(fn, name, index, args, kwargs, is_data, numerator_only=True)
        return NonAffine(fn, name, index)
    if target in _SUM_FUNCTIONS:
        return _sum(_SUM_FUNCTIONS[target], name, index, args, kwargs, is_data)
    if target in _MUL_FUNCTIONS:
        return _product(_MUL_FUNCTIONS[target], name, index, args, kwargs, is_data, numerator_only=False)
    if target in _DIV_FUNCTIONS:
        return _product(_DIV_FUNCTIONS[target], name, index, args, kwargs, is_data, numerator_only=True)
    if target in CAT_FUNCTIONS:
        return _cat(target, name, index, args, kwargs, is_data)
    if target in WEIGHTED_FUNCTIONS and only_first:
        return WeightedFn(fn, name, index)
    if target is F.pad and only_first and not _zero_pad(args, kwargs):
        return NonAffine(fn, name, index)
    if target in LINEAR_FUNCTIONS and only_first:
        return LinearOp(fn, name, index)
    return NonAffine(fn, name, index)


def _module_op(module: nn.Module, name: str, index: int) -> Op:
    if isinstance(module, DENSE_MODULES):
        return DenseModule(module, name, index)
    if isinstance(module, CONV_MODULES):
        return ConvModule(module, name, index)
    if isinstance(module, BATCHNORM_MODULES):
        return BatchNormModule(module, name, index)
    if isinstance(module, DROPOUT_MODULES):
        return DropoutModule(module, name, index)
    if _pool2x2(module):
        return AvgPool2x2(module, name, index)
    if isinstance(module, LINEAR_MODULES):
        return LinearOp(module, name, index)
    return NonAffine(module, name, index)


def _sum(fn, name, index, args, kwargs, is_data) -> Op:
    if len(args) != 2 or set(kwargs) - {"alpha"} or is_data(kwargs.get("alpha")):
        return NonAffine(fn, name, index)  # operands passed by keyword, or a data-valued alpha
    return Sum(fn, name, index, tuple(i for i, v in enumerate(args) if not is_data(v)))


def _product(fn, name, index, args, kwargs, is_data, numerator_only: bool) -> Op:
    data = [is_data(v) for v in (*args, *kwargs.values())]
    linear = sum(data) == 1 and (data[0] if numerator_only else True) and not kwargs.get("rounding_mode")
    return LinearOp(fn, name, index) if linear else NonAffine(fn, name, index)


def _cat(fn, name, index, args, kwargs, is_data) -> Op:
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    pieces = args[0] if args else kwargs.get("tensors", ())
    if dim == 0 or not args or is_data(dim):
        return NonAffine(fn, name, index)  # along the batch dimension: not a per-sample op
    return Cat(fn, name, index, tuple(i for i, p in enumerate(pieces) if not is_data(p)))


def _zero_pad(args: tuple, kwargs: dict) -> bool:
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value", None)
    return mode == "constant" and value in (None, 0, 0.0)


def is_avgpool(op: Op) -> bool:
    """An average pooling (the sites of ASF-BP's spiking pooling)."""
    if op.module is not None:
        return isinstance(op.module, AVGPOOL_MODULES)
    return op.fn in AVGPOOL_FUNCTIONS
