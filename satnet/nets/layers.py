"""Drop-in convolution and instance-norm layers that take PyTorch's fast CPU kernels, and group-norm,
max-pooling and upsampling layers that keep the activation's precision under autocast.

Each class subclasses the torch layer of the same name and changes only which kernel computes
it, or in which precision: the function, the parameters and the state_dict keys are the torch
layer's, so checkpoints load either way and `isinstance(m, nn.Conv3d)` still holds. Measured on a
2-core AVX512 CPU (docs/performance.md):

- `Conv2d` / `Conv3d`: PyTorch 2.13 sends an fp32 CPU convolution of batch 1 to its native
  (im2col) kernel instead of oneDNN when N * C * D * H <= 20480 (its heuristic ignores the last
  axis), e.g. 32 channels at 20x28x20 or 128 at 10x14x10: the deep stages of a U-Net at batch 1.
  That kernel ran 3-10x slower than oneDNN on the same convolution (7-35 against 38-105 GFLOP/s).
  `convolution` sends every batch-1 fp32 CPU convolution to oneDNN instead (not while exporting or
  on fake tensors, which that kernel cannot take). Batches > 1 already go there; autocast to bf16
  always does.
- `InstanceNorm2d` / `InstanceNorm3d`: instance norm with affine weights and no running
  statistics is group norm with one group per channel. `F.instance_norm` copies the input into a
  (1, B * C, ...) batch-norm view (contiguous, so channels_last input is converted twice) and an
  in-place activation on that view makes autograd copy the gradient again (CopySlices);
  `F.group_norm` computes the same statistics in one native kernel, keeps channels_last, and
  the activation after it works in place. Norm + LeakyReLU forward and backward took 2.4x less
  time (B 7, 32 channels, 40x56x40, contiguous). In channels_last the backward is satnet's own
  (`_ChannelsLastInstanceNorm`), because PyTorch's channels_last group-norm backward is slow.
- `GroupNorm`, `MaxPool2d` / `MaxPool3d`, `Upsample` (and the instance norms under autocast): run in
  the activation's bf16/fp16 where CUDA autocast (the norms, bilinear/trilinear upsampling) or CPU
  autocast (max pooling) would cast it to fp32, so both devices keep what satnet.planning.memory,
  traced under CPU autocast, counts.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import is_fake


def convolution(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
    padding: Sequence[int], dilation: Sequence[int], groups: int,
) -> torch.Tensor:
    """F.conv2d / F.conv3d with numeric `padding`; batch-1 fp32 CPU inputs go to oneDNN (module docstring).

    x (B, C, *spatial). The backward of a oneDNN forward is PyTorch's usual one (it picks its kernel
    again), so gradients are what F.conv3d gives.
    """
    if x.shape[0] == 1 and _onednn_wanted(x, weight):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, padding, stride, dilation, groups)
    conv = F.conv2d if x.dim() == 4 else F.conv3d
    return conv(x, weight, bias, stride, padding, dilation, groups)


def _onednn_wanted(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 on the CPU, oneDNN present and enabled; not under CPU autocast (whose bf16 path is oneDNN already,
    and which would not cast the inputs of a direct oneDNN call)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not x.is_mkldnn and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not _tracing(x))


def _tracing(x: torch.Tensor) -> bool:
    """Inside torch.onnx.export or a TorchScript trace, or on fake tensors (torch.compile, torch.export, the
    memory model's FakeTensorMode trace): `aten::mkldnn_convolution` has no ONNX symbolic (the export failed
    on it) and no fake-tensor kernel (its CPU kernel failed: "itensor_view_from_dense expects CPU tensor
    input"), so F.conv2d / F.conv3d, which export as Conv and run on fake tensors, take every convolution there."""
    return (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or is_fake(x))


class _OneDNNConv:
    """Mixin for nn.Conv2d / nn.Conv3d: the forward goes through `convolution`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        return convolution(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(_OneDNNConv, nn.Conv2d):
    """nn.Conv2d; batch-1 fp32 CPU inputs computed by oneDNN."""


class Conv3d(_OneDNNConv, nn.Conv3d):
    """nn.Conv3d; batch-1 fp32 CPU inputs computed by oneDNN."""


class _GroupNormInstanceNorm:
    """Mixin for nn.InstanceNorm2d / 3d without running statistics: forward is F.group_norm with C groups."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or input.dim() != self._get_no_batch_dim() + 1:
            return super().forward(input)  # running statistics or an unbatched input: torch's path
        if _channels_last_fp32(input, self.weight) and torch.is_grad_enabled():
            # fp32 in, fp32 statistics: under CPU autocast (an fp32 input here comes from an op that
            # autocast runs in fp32, e.g. max pooling) its matrix product would run in bf16 and
            # E[x^2] - mean^2 would cancel (errors of 5e-2 at mean 0, 6e-1 at mean 10)
            with torch.autocast(input.device.type, enabled=False):
                return _ChannelsLastInstanceNorm.apply(input, self.weight, self.bias, self.eps)
        if _low_precision_autocast(input):
            # CUDA autocast lists group_norm as an fp32 op: it would cast every activation to fp32 and
            # backward would keep both copies (1.7x to 1.9x the memory of an fp32 step, measured on an
            # H200: docs/gpu.md). Run it in the activation's own precision, as CPU autocast does; the
            # kernels accumulate the statistics in fp32 either way.
            return _group_norm_in_own_precision(input, self.num_features, self.weight, self.bias, self.eps)
        return F.group_norm(input, self.num_features, self.weight, self.bias, self.eps)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm run in the activation's precision under autocast, as the instance norm above: CUDA
    autocast lists group_norm as an fp32 op (CPU autocast does not), so an fp16/bf16 step would keep
    fp32 copies of every normalised activation on the GPU, and the memory model, traced under CPU
    autocast, would count half of that."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if _low_precision_autocast(input):
            return _group_norm_in_own_precision(input, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(input)


class _InputPrecision:
    """Mixin for a layer without parameters whose op one autocast lists as fp32 and the other does not:
    under autocast the layer runs outside it, in the input's precision, on both devices alike."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if _low_precision_autocast(input):
            with torch.autocast(input.device.type, enabled=False):
                return super().forward(input)
        return super().forward(input)


class MaxPool2d(_InputPrecision, nn.MaxPool2d):
    """nn.MaxPool2d in the input's precision under autocast (see MaxPool3d)."""


class MaxPool3d(_InputPrecision, nn.MaxPool3d):
    """nn.MaxPool3d in the input's precision under autocast. CPU autocast lists max_pool3d as an fp32 op
    (CUDA autocast does not): on the CPU a bf16 step would cast every pooled activation to fp32, and the
    memory model, traced under CPU autocast, would overestimate what the same step keeps on a GPU."""


class Upsample(_InputPrecision, nn.Upsample):
    """nn.Upsample in the input's precision under autocast. CUDA autocast lists upsample_bilinear2d and
    upsample_trilinear3d as fp32 ops (CPU autocast does not): a GPU step would interpolate every decoder
    stage of DI2IN to fp32, and its concatenation with the bf16/fp16 skip would be fp32 too: traced with that
    policy, an fp16 step of a 3D DI2IN [32, ..., 320] at 128^3, batch 2, took 1.23x (ORG) and 1.07x (SAT) the
    total of the memory model, traced under CPU autocast."""


def _low_precision_autocast(x: torch.Tensor) -> bool:
    return (x.dtype in (torch.bfloat16, torch.float16) and x.device.type in ("cpu", "cuda")
            and torch.is_autocast_enabled(x.device.type))


def _group_norm_in_own_precision(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                                 eps: float) -> torch.Tensor:
    """F.group_norm outside autocast, in the dtype of the activation `x` (the affine parameters cast to it)."""
    with torch.autocast(x.device.type, enabled=False):
        return F.group_norm(x, groups, _as(weight, x.dtype), _as(bias, x.dtype), eps)


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def _channels_last_fp32(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    last = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    return (x.device.type == "cpu" and x.dim() in (4, 5) and x.shape[1] > 1 and x.is_contiguous(memory_format=last)
            and not x.is_contiguous()
            and x.dtype == torch.float32 and weight is not None and weight.dtype == torch.float32)


CANCELLATION_RATIO = 4.0  # |mean| / std above which the one-pass variance loses more than about 5e-5


class _ChannelsLastInstanceNorm(torch.autograd.Function):
    """Instance norm of a channels_last fp32 input, on the (B, V, C) view that its memory already is.

    Forward: per (b, c) the sum of x (PyTorch's cascaded sum) and of x^2 (the diagonal of one batched
    matrix product), then y = a x + b in one pass. The variance E[x^2] - mean^2 cancels when |mean| is
    many times the std: for the (b, c) whose |mean| exceeds CANCELLATION_RATIO std it is recomputed
    from the centred values (without that, y was off by 3.5e-4 at mean 10, std 1, and 2.4e-3 at mean
    30; after it 5e-6 and 7e-6). Norm inputs of trained satnet networks had |mean| / std up to 2.5
    (Hippocampus) and 6 (ISIC), median 2; centring every channel instead cost 8% of a training step.
    PyTorch 2.13's channels_last group-norm kernel, used before, accumulates both sums in plain fp32
    loops: at 7 x 32 x 40x56x40 its rstd was off by 1.2e-4 (inputs of mean 3) to 1.4e-3 (mean 10)
    against float64, these sums by 5e-6 / 6e-5, and a whole training step's gradients came out
    5-20x less accurate than torch's contiguous layers (tests/nets/test_layers.py). Costs 46 against
    29 ms per forward at that shape (2 threads, AVX512).

    Backward: PyTorch 2.13's channels_last group-norm backward took 2.2x the time of this one (B 7,
    32 channels, 40x56x40: 607-663 against 283-286 ms): per (b, c) the sums of dy and of dy * x (one
    batched matrix product, of which the diagonal is used), then dx = A dy + B x + C with per-(b, c)
    coefficients.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
        n, c = x.shape[:2]
        v = x[0, 0].numel()
        xv = x.permute(0, *range(2, x.dim()), 1).reshape(n, v, c)  # (B, V, C): a view of the channels_last memory
        mean = xv.sum(1).div_(v)  # (B, C)
        mean_sq = torch.bmm(xv.transpose(1, 2), xv).diagonal(dim1=1, dim2=2).div(v)
        var = mean_sq - mean * mean
        # E[x^2] - mean^2 cancels when |mean| >> std (error about 1e-7 (mean / std)^2): those (b, c) get
        # the two-pass variance of their centred values
        far = mean * mean > CANCELLATION_RATIO**2 * var.clamp(min=0)
        if far.any():
            b_idx, c_idx = far.nonzero(as_tuple=True)
            centred = xv[b_idx, :, c_idx] - mean[b_idx, c_idx].unsqueeze(1)  # (N, V)
            var[b_idx, c_idx] = (centred * centred).mean(1)
        rstd = var.clamp_(min=0).add_(eps).rsqrt_()
        scale = rstd * weight
        shift = (-mean * scale) if bias is None else torch.addcmul(bias, mean, scale, value=-1)
        stats_shape = (n, c) + (1,) * (x.dim() - 2)
        y = torch.addcmul(shift.view(stats_shape), x, scale.view(stats_shape))
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, mean, rstd, weight = ctx.saved_tensors  # mean, rstd (B, C)
        n, c = x.shape[:2]
        v = x[0, 0].numel()
        last = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        to_bvc = (0, *range(2, x.dim()), 1)
        centred = (x.permute(to_bvc).reshape(n, v, c) - mean.unsqueeze(1))  # (B, V, C), x - mean
        gv = grad.contiguous(memory_format=last).permute(to_bvc).reshape(n, v, c)
        sum_dy = gv.sum(1)  # (B, C)
        # sum over V of dy * (x - mean) * rstd: on the centred x, because sum(dy x) - mean sum(dy) cancels
        sum_dy_xhat = torch.bmm(gv.transpose(1, 2), centred).diagonal(dim1=1, dim2=2) * rstd
        a = rstd * weight  # dx = a * (dy - mean(dy) - xhat * mean(dy * xhat))
        gx = centred.mul_((-a * rstd * sum_dy_xhat / v).unsqueeze(1)).add_((-a * sum_dy / v).unsqueeze(1))
        gx = gx.addcmul_(gv, a.unsqueeze(1))  # (B, V, C)
        gx = gx.view(n, *x.shape[2:], c).permute(0, x.dim() - 1, *range(1, x.dim() - 1))
        return gx, sum_dy_xhat.sum(0), sum_dy.sum(0) if ctx.has_bias else None, None


class InstanceNorm2d(_GroupNormInstanceNorm, nn.InstanceNorm2d):
    """nn.InstanceNorm2d computed as group norm with one group per channel (same function and parameters)."""


class InstanceNorm3d(_GroupNormInstanceNorm, nn.InstanceNorm3d):
    """nn.InstanceNorm3d computed as group norm with one group per channel (same function and parameters)."""


def conv_cls(spatial_dims: int) -> type[nn.Module]:
    return Conv2d if spatial_dims == 2 else Conv3d


def instance_norm_cls(spatial_dims: int) -> type[nn.Module]:
    return InstanceNorm2d if spatial_dims == 2 else InstanceNorm3d


def preferred_memory_format(device: torch.device, spatial_dims: int) -> torch.memory_format:
    """The layout satnet's networks run fastest in on `device`: channels_last (2D) / channels_last_3d (3D)
    on a CPU with oneDNN (its convolutions use that layout directly, and `InstanceNorm` keeps it), else
    contiguous: on an H200, channels_last_3d made isotropic 3D U-Net steps 0.72x as fast, though 2.1x to 2.7x
    faster on a plan with 1x3x3 kernels in bf16 (docs/gpu.md). Training and inference put the network and its
    inputs in it."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return torch.contiguous_format
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
