"""Soft morphology (min/max filters) with a lean backward, and the soft skeleton of clDice.

``torch.nn.functional.max_pool3d`` saves int64 indices for backward: 8 bytes per voxel per pooling, and the
soft skeleton needs dozens of poolings. :class:`_NeighbourhoodExtremum` instead saves the winning neighbour as a
``uint8`` (1 byte per voxel) and routes the gradient to it, exactly as max pooling does. Without autograd
(the target's skeleton) the plain pooling kernels are used; both give identical values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def _window(t: Tensor, lo: tuple[int, ...], offset: tuple[int, ...], size: tuple[int, ...]) -> Tensor:
    return t[(slice(None), slice(None)) + tuple(slice(a + o, a + o + n) for a, o, n in zip(lo, offset, size))]


class _NeighbourhoodExtremum(torch.autograd.Function):
    """Min (or max) over the voxels at ``offsets`` (each in {-1, 0, 1} per spatial axis), outside = ±inf."""

    @staticmethod
    def forward(ctx, x: Tensor, offsets: tuple[tuple[int, ...], ...], take_min: bool) -> Tensor:
        size = tuple(x.shape[2:])
        lo = tuple(int(any(o[a] != 0 for o in offsets)) for a in range(len(size)))
        pad: list[int] = []
        for a in reversed(range(len(size))):
            pad += [lo[a], lo[a]]
        xp = F.pad(x, pad, value=float("inf") if take_min else float("-inf"))
        line = _line_axis(offsets)
        if line is not None:
            # a 1-D window (-1, 0, +1) along one axis: one fused reduction over an unfolded view
            best, index = (xp.unfold(2 + line, 3, 1).min if take_min else xp.unfold(2 + line, 3, 1).max)(-1)
            arg = index.to(torch.uint8)
        else:
            best = _window(xp, lo, offsets[0], size).clone()
            arg = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
            for k, offset in enumerate(offsets[1:], start=1):
                v = _window(xp, lo, offset, size)
                better = v < best if take_min else v > best
                arg.masked_fill_(better, k)
                torch.where(better, v, best, out=best)
        ctx.save_for_backward(arg)
        ctx.meta = (offsets, lo, size, tuple(xp.shape))
        return best

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (arg,) = ctx.saved_tensors
        offsets, lo, size, padded_shape = ctx.meta
        zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
        gp = grad.new_zeros(padded_shape)
        for k, offset in enumerate(offsets):
            _window(gp, lo, offset, size).add_(torch.where(arg == k, grad, zero))
        return _window(gp, lo, (0,) * len(size), size), None, None


def _line_axis(offsets: tuple[tuple[int, ...], ...]) -> int | None:
    """The axis when ``offsets`` are exactly (-1, 0, +1) along one axis (the unfold order), else None."""
    for a in range(len(offsets[0])):
        if offsets == tuple(tuple(s if b == a else 0 for b in range(len(offsets[0]))) for s in (-1, 0, 1)):
            return a
    return None


def _cross_offsets(nd: int) -> tuple[tuple[int, ...], ...]:
    offsets = [(0,) * nd]
    for a in range(nd):
        for s in (-1, 1):
            o = [0] * nd
            o[a] = s
            offsets.append(tuple(o))
    return tuple(offsets)


def _line_offsets(nd: int, axis: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(s if a == axis else 0 for a in range(nd)) for s in (-1, 0, 1))


def _pool(x: Tensor, kernel: tuple[int, ...]) -> Tensor:
    pool = F.max_pool3d if x.ndim == 5 else F.max_pool2d
    return pool(x, kernel, stride=1, padding=tuple(k // 2 for k in kernel))


def soft_erode(x: Tensor) -> Tensor:
    """Minimum over the centre and its 2·nd face neighbours (min of the three 1-D min-pools of clDice)."""
    nd = x.ndim - 2
    if torch.is_grad_enabled() and x.requires_grad:
        return _NeighbourhoodExtremum.apply(x, _cross_offsets(nd), True)
    out = x
    for a in range(nd):
        kernel = tuple(3 if b == a else 1 for b in range(nd))
        m = -_pool(-x, kernel)
        out = m if a == 0 else torch.minimum(out, m)
    return out


def soft_dilate(x: Tensor) -> Tensor:
    """Maximum over the 3×3(×3) neighbourhood, as separable 1-D maxima."""
    nd = x.ndim - 2
    if torch.is_grad_enabled() and x.requires_grad:
        for a in range(nd):
            x = _NeighbourhoodExtremum.apply(x, _line_offsets(nd, a), False)
        return x
    return _pool(x, (3,) * nd)


def soft_skeleton(x: Tensor, iterations: int) -> Tensor:
    """Soft skeleton of clDice (Shit et al. 2021) of probabilities ``x`` (B, 1, ...):
    ``skel = relu(x − open(x))``; then ``iterations`` times ``x = erode(x); d = relu(x − open(x));
    skel += relu(d − skel·d)``. Each erosion is computed once and reused by the next opening."""
    eroded = soft_erode(x)
    skel = F.relu(x - soft_dilate(eroded))
    for _ in range(iterations):
        x = eroded
        eroded = soft_erode(x)
        delta = F.relu(x - soft_dilate(eroded))
        skel = skel + F.relu(delta - skel * delta)
    return skel
