"""Batch norm in a form that trains fast on channels-last CPU tensors; the same maths as torch's.

The engine trains in channels-last memory (mnistcnn.training.engine): oneDNN's convolutions
and ATen's max-pool run 1.7x and 2.7x faster there than on NCHW tensors for this project's
shapes (docs/speed.md). ATen's channels-last batch norm does not: it walks the (N*H*W, C) rows of the
memory C values at a time, and where C is not a multiple of 16 (8, 12, 20, 24, 40 channels
here) its vector code runs part-empty: 16 ms a training step for quick25k's first norm (12
channels at 28x28, batch 128, 2 threads) against 2 ms for the NCHW kernel.

`BatchNorm2d` computes the same thing from whole-tensor ops that run at memory speed: the
sums run down the (N*H, W*C) view of the memory, W*C values wide, and then fold the W
groups into C. Its state dict is nn.BatchNorm2d's. It applies where it pays: training, on
the CPU, channels-last, C not a multiple of 16; elsewhere (evaluation, the GPU, 16, 32, 64
channels) torch's own kernel runs, in training given its gradient channels-last. Every op is
an ATen one, so the portable CPU code (mnistcnn.training.kernels) covers it and tests/cpus
checks it on other CPUs.
"""

from __future__ import annotations

import torch
from torch import nn

NATIVE_WIDTH = 16  # channel counts that are multiples of this run faster in torch's own kernel


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) channels-last -> its memory as (N*H, W*C), a view."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h, w * c)


def _per_channel(row_sums: torch.Tensor, channels: int) -> torch.Tensor:
    """(W*C,) sums of the rows -> (C,): the W groups folded."""
    return row_sums.view(-1, channels).sum(0)


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of a channels-last (N, C, H, W) tensor; also returns the batch's
    mean and biased variance, for the running statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        n, c, h, w = x.shape
        rows, count = _rows(x), n * h * w
        mean = _per_channel(rows.sum(0), c) / count
        centered = rows - mean.repeat(w)
        var = _per_channel((centered * centered).sum(0), c) / count
        invstd = torch.rsqrt(var + eps)  # ATen's: 1 / sqrt, both correctly rounded, no vector maths library
        y = torch.addcmul(bias.repeat(w), centered, (weight * invstd).repeat(w))
        ctx.save_for_backward(centered, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y.view(n, h, w, c).permute(0, 3, 1, 2), mean, var

    @staticmethod
    def backward(ctx, grad, _mean, _var):
        centered, invstd, weight = ctx.saved_tensors
        n, c, h, w = grad.shape
        rows, count = _rows(grad.contiguous(memory_format=torch.channels_last)), n * h * w
        sum_grad = _per_channel(rows.sum(0), c)
        sum_grad_centered = _per_channel((rows * centered).sum(0), c)
        grad_x = None
        if ctx.needs_input_grad[0]:  # weight * invstd * (g - mean(g) - xhat * mean(g * xhat))
            scale = weight * invstd
            shift = (-scale * sum_grad / count).repeat(w)
            slope = (-scale * invstd * invstd * sum_grad_centered / count).repeat(w)
            grad_x = torch.addcmul(torch.addcmul(shift, rows, scale.repeat(w)), centered, slope)
            grad_x = grad_x.view(n, h, w, c).permute(0, 3, 1, 2)
        return grad_x, sum_grad_centered * invstd, sum_grad, None


class _ChannelsLastGradient(torch.autograd.Function):
    """The identity, whose backward hands the gradient on channels-last. Below a global average
    pool or a flatten the gradient comes back NCHW, and torch's batch norm backward on an NCHW
    gradient of a channels-last input ran 10x slower than on a channels-last one (1.8 against 18.6
    ms for cnn24k's last norm, 64 channels at 10x10, batch 64)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d, trained by _ChannelsLastBatchNorm where torch's kernel is slow (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.training and x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
        if fast and not x.shape[1] % NATIVE_WIDTH:
            return _ChannelsLastGradient.apply(super().forward(x))
        if not (fast and self.affine and self.track_running_stats
                and x.numel() > x.shape[1]):  # one value a channel: torch's own says why it cannot
            return super().forward(x)
        y, mean, var = _ChannelsLastBatchNorm.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():  # as torch updates them: the unbiased variance, the same momentum
            self.num_batches_tracked.add_(1)
            rate = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
            count = x.numel() // x.shape[1]
            self.running_mean.mul_(1 - rate).add_(mean, alpha=rate)
            self.running_var.mul_(1 - rate).add_(var * (count / (count - 1)), alpha=rate)
        return y
