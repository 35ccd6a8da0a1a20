"""Exact memory model of one training step and of one inference patch, counted on dataless tensors.

nnU-Net sizes patches with a proxy (a sum of convolution output sizes) that leaves out the
decoder's concatenated skips, the norm outputs and the loss. SAT gates save memory exactly
there, so satnet counts instead: it runs the real network's forward, loss and backward on
meta tensors (shapes, dtypes and aliasing, no data, no memory) and follows every storage an op
allocates until the last reference to it dies. The result is the byte count a real run holds
at every op boundary, de-duplicated by storage (views and in-place results count once, at the
storage's size). See docs/memory.md for what each field includes and the accuracy measured
against real runs.

The loss is modelled as nnU-Net's Dice + cross-entropy at every deep-supervision output
(`dice_ce_loss`), because what the loss saves for backward (softmax and log-softmax of every
output, the one-hot targets) is part of the step's memory.

Precision "bf16"/"fp16" runs the trace under CPU autocast on fake CPU tensors
(FakeTensorMode: meta storage under a CPU device): autocast never reaches meta tensors
(torch.autocast has no "meta" device type, and the CPU and CUDA autocast kernels skip tensors
of other devices), and fake CUDA tensors abort the process in backward on a CPU-only build.
For the ops satnet's nets use, CPU and CUDA autocast agree (docs/memory.md; instance and group norm,
max pooling and DI2IN's upsampling because satnet.nets.layers takes them out of autocast, since CUDA
autocast would run the norms and the upsampling in fp32 and CPU autocast max pooling).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call

from satnet.errors import ConfigError, unknown_name_error
from satnet.names import PRECISIONS
from satnet.nets.spec import NetworkSpec
from satnet.planning.plans import MemoryEstimate
from satnet.planning.storage_tracking import LiveTensorTracker, SavedTensorCounter, storage_bytes

log = logging.getLogger(__name__)

# Optimizer state per parameter, in parameter-sized tensors: SGD's momentum buffer; Adam's two
# moments (its per-tensor step counters are a few bytes); Adadelta's square_avg and acc_delta.
OPTIMIZER_STATE_COPIES = {"sgd": 1, "adam": 2, "adadelta": 2}
# The autocast dtype of each training precision (satnet.names.PRECISIONS); None: fp32, no autocast.
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Scratch memory inside one convolution op, in units of the step's largest convolution output.
# Measured on CPU (oneDNN's backward reorders, benchmarks/bench_memory.py, docs/memory.md): up to
# 3x in bf16, under 0.1x in fp32 for satnet's U-Nets. With it, real CUDA steps on an H200 peaked
# at 0.885 to 0.925 of the estimated total (docs/gpu.md).
WORKSPACE_FACTOR = 2.0


# ---------------------------------------------------------------------------------------------
# The loss whose saved tensors are part of a step
# ---------------------------------------------------------------------------------------------


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights: 1, 1/2, 1/4, ... with the lowest resolution dropped (when n > 1), summing to 1."""
    weights = [0.5 ** i for i in range(n)]
    if n > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def dice_ce_loss(outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy + soft Dice (foreground classes, per sample) summed over deep-supervision outputs.

    outputs[i]: logits (B, K, *S_i); targets[i]: int64 labels (B, *S_i). Outputs of weight 0 are
    skipped, as nnU-Net does. The softmax is taken in fp32 (what CUDA autocast does to softmax).
    """
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for weight, logits, target in zip(deep_supervision_weights(len(outputs)), outputs, targets):
        if weight == 0:
            continue
        ce = F.cross_entropy(logits, target)
        probs = torch.softmax(logits.float(), 1)  # (B, K, *S)
        with torch.no_grad():
            onehot = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
            onehot.scatter_(1, target.unsqueeze(1), True)  # (B, K, *S)
            axes = tuple(range(2, probs.ndim))
            sum_gt = onehot.sum(axes)  # (B, K)
        intersect = (probs * onehot).sum(axes)
        dice = (2 * intersect + 1e-5) / (probs.sum(axes) + sum_gt + 1e-5).clamp_min(1e-8)
        total = total + weight * (ce - dice[:, 1:].mean())
    return total


# ---------------------------------------------------------------------------------------------
# Building the traced network
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _network_from_json(spec_json: str) -> nn.Module:
    """The network of a spec with parameters on the meta device (no memory), cached per spec."""
    from satnet.nets import build_network  # the nets package builds it; imported here so planning loads without it

    spec = NetworkSpec.from_dict(json.loads(spec_json))
    try:
        with torch.device("meta"):
            return build_network(spec)
    except (RuntimeError, NotImplementedError) as exc:  # an initialiser without a meta kernel
        log.debug("building %s on the meta device failed (%s); building it on the CPU", spec.arch, exc)
        return build_network(spec)


def _spec_json(spec: NetworkSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


def _resolve_network(model: nn.Module | NetworkSpec | dict) -> tuple[nn.Module, NetworkSpec | None]:
    if isinstance(model, nn.Module):
        return model, None
    spec = NetworkSpec.from_dict(model) if isinstance(model, dict) else model
    if not isinstance(spec, NetworkSpec):
        raise ConfigError(f"model must be an nn.Module, a NetworkSpec or its dict, not {type(model).__name__}")
    return _network_from_json(_spec_json(spec)), spec


def in_channels_of(module: nn.Module) -> int:
    """Input channels of a network: those of its first convolution."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.conv._ConvNd):
            return sub.in_channels
    raise ConfigError(f"cannot tell the input channels of {type(module).__name__}: it has no convolution")


def _check_request(spec: NetworkSpec | None, patch_size: Sequence[int], batch_size: int,
                   optimizer: str, precision: str) -> None:
    if optimizer not in OPTIMIZER_STATE_COPIES:
        raise unknown_name_error("optimizer", optimizer, OPTIMIZER_STATE_COPIES)
    if precision not in PRECISIONS:
        raise unknown_name_error("precision", precision, PRECISIONS)
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
    if any(not isinstance(p, numbers.Integral) or p < 1 for p in patch_size):
        raise ConfigError(f"patch_size must be positive integers, not {list(patch_size)}")
    if spec is not None:
        stride = spec.total_stride()
        if len(patch_size) != spec.spatial_dims or any(p % s for p, s in zip(patch_size, stride)):
            raise ConfigError(
                f"patch_size {list(patch_size)} must have {spec.spatial_dims} entries, each a multiple of the "
                f"network's total stride {stride}"
            )


def _tensor_mode(fake: bool) -> tuple[contextlib.AbstractContextManager, str]:
    """(mode, device) for a trace: meta tensors, or fake CPU tensors (FakeTensorMode) when `fake`.

    Meta tensors are the cheaper choice (a fake mode's first use imports torch._dynamo, about
    2 s), but autocast acts only on tensors of a real device type, and a module that creates a
    CPU tensor inside forward cannot mix it with meta tensors; fake CPU tensors serve both.
    """
    if fake:
        return FakeTensorMode(allow_non_fake_inputs=True), "cpu"
    return contextlib.nullcontext(), "meta"


def _traced(trace, *args, precision: str):
    """Run trace(*args, precision, fake) on meta tensors where possible, else on fake CPU tensors."""
    if AUTOCAST_DTYPES[precision] is None:
        try:
            return trace(*args, precision, fake=False)
        except (RuntimeError, NotImplementedError) as exc:  # e.g. a CPU tensor made inside forward
            log.debug("tracing on the meta device failed (%s); tracing with fake CPU tensors", exc)
    return trace(*args, precision, fake=True)


def _shadow_state(module: nn.Module, device: str) -> dict[str, torch.Tensor]:
    """Dataless copies of the parameters (requiring grad like them) and buffers, for functional_call."""
    state = {name: torch.empty(p.shape, dtype=p.dtype, device=device).requires_grad_(p.requires_grad)
             for name, p in module.named_parameters()}
    state.update({name: torch.empty(b.shape, dtype=b.dtype, device=device) for name, b in module.named_buffers()})
    return state


def autocast_context(precision: str) -> contextlib.AbstractContextManager:
    """CPU autocast to the precision's dtype ("bf16", "fp16"), or nothing for "fp32"."""
    dtype = AUTOCAST_DTYPES[precision]
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _mode(module: nn.Module, training: bool):
    """Put the module in train/eval mode for the trace and restore its mode afterwards."""
    was_training = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was_training)


# ---------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepTrace:
    """Bytes of one training step as the trace counts them (docs/memory.md).

    - inputs: the image batch (B, C, *S) and the int64 targets (B, *S_i) of every output.
    - activations: what forward and loss allocate and leave live for backward: the tensors
      autograd saved, the outputs and the loss (what a training loop holds when it calls backward).
    - saved: the part of `activations` that autograd saved for backward.
    - peak: the most bytes live at once during forward, loss and backward (gradients included).
    - after_backward: live after backward: the parameter gradients and the outputs still held.
    - gradients: the parameter gradients.
    - parameters: parameters and buffers; trainable: the parameters that require grad.
    - workspace: the one modelled term, an allowance for the scratch memory a convolution
      kernel allocates and frees inside one op, which no trace of ops can see:
      WORKSPACE_FACTOR x the largest convolution output of the step (docs/memory.md).
    """

    inputs: int
    activations: int
    saved: int
    peak: int
    after_backward: int
    gradients: int
    parameters: int
    trainable: int
    workspace: int


def _trace_step(module: nn.Module, in_channels: int, patch: Sequence[int], batch: int, precision: str,
                fake: bool) -> StepTrace:
    mode, device = _tensor_mode(fake)
    tracker = LiveTensorTracker()
    with mode:
        state = _shadow_state(module, device)
        x = torch.empty(batch, in_channels, *patch, device=device)  # (B, C, *S)
    saved = SavedTensorCounter()
    for counter in (tracker, saved):
        counter.ignore([x, *state.values()])
    with _mode(module, training=True), mode, tracker:
        with autocast_context(precision), saved.hooks():
            outputs = functional_call(module, state, (x,))
            outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
            with tracker.paused():
                targets = [torch.empty((o.shape[0], *o.shape[2:]), dtype=torch.int64, device=device)
                           for o in outputs]  # (B, *S_i)
            for counter in (tracker, saved):
                counter.ignore(targets)
            saved_before_loss = saved.bytes
            loss = dice_ce_loss(outputs, targets)
        activations = tracker.live
        loss.backward()
        after_backward = tracker.live
    grads = [p.grad for p in state.values() if p.grad is not None]
    log.debug("step trace: %d saved by the network, %d by the loss", saved_before_loss, saved.bytes - saved_before_loss)
    return StepTrace(
        inputs=storage_bytes([x, targets]), activations=activations, saved=saved.bytes, peak=tracker.peak,
        after_backward=after_backward, gradients=storage_bytes(grads), parameters=storage_bytes(list(state.values())),
        trainable=storage_bytes([p for p in state.values() if p.requires_grad]),
        workspace=int(WORKSPACE_FACTOR * tracker.largest_conv_output),
    )


def _trace_inference(module: nn.Module, in_channels: int, patch: Sequence[int], precision: str, fake: bool) -> int:
    mode, device = _tensor_mode(fake)
    tracker = LiveTensorTracker()
    with mode:
        state = _shadow_state(module, device)
        x = torch.empty(1, in_channels, *patch, device=device)  # (1, C, *S)
    tracker.ignore([x, *state.values()])
    with _mode(module, training=False), mode, tracker, torch.no_grad(), autocast_context(precision):
        functional_call(module, state, (x,))
    return tracker.peak + storage_bytes(x)


@functools.lru_cache(maxsize=64)
def _inference_for_spec(spec_json: str, patch: tuple[int, ...], precision: str) -> int:
    """_trace_inference of a spec's network, cached: the planner asks for one patch at many batch sizes."""
    spec = NetworkSpec.from_dict(json.loads(spec_json))
    return _traced(_trace_inference, _network_from_json(spec_json), spec.in_channels, patch, precision=precision)


def trace_training_step(model: nn.Module | NetworkSpec | dict, patch_size: Sequence[int], batch_size: int,
                        precision: str = "fp32") -> StepTrace:
    """The full breakdown of one training step (what `estimate_memory` sums); see StepTrace."""
    module, spec = _resolve_network(model)
    _check_request(spec, patch_size, batch_size, "sgd", precision)
    in_channels = spec.in_channels if spec is not None else in_channels_of(module)
    return _traced(_trace_step, module, in_channels, [int(p) for p in patch_size], int(batch_size), precision=precision)


def estimate_memory(model: nn.Module | NetworkSpec | dict, patch_size: Sequence[int], batch_size: int,
                    optimizer: str = "sgd", precision: str = "fp32") -> MemoryEstimate:
    """Bytes of GPU memory one training step takes, as torch.cuda.max_memory_allocated counts them.

    model: an nn.Module (its parameters are only read for their shapes; it is left unchanged),
    or a NetworkSpec / its dict (built with satnet.nets.build_network on the meta device, cached).
    patch_size: spatial size (Z, Y, X) or (Y, X) in voxels. optimizer: "sgd" (momentum),
    "adam" or "adadelta". precision: "fp32", or "bf16" / "fp16" for autocast training.

    activations: see StepTrace. parameters: parameters and buffers. gradients: the parameter
    gradients. optimizer: its state. total: the peak of one step: parameters + optimizer state
    + inputs and targets + the larger of (the peak of forward, loss and backward plus one
    convolution's workspace allowance, StepTrace.workspace) and (what is live after backward
    plus one gradient-sized temporary of the optimizer step). It is not the sum of the other
    fields: gradients and activations never coexist in full.
    inference: the peak of live tensors in an eval-mode, no-grad forward of one patch (batch 1),
    input included, parameters excluded.
    """
    module, spec = _resolve_network(model)
    _check_request(spec, patch_size, batch_size, optimizer, precision)
    in_channels = spec.in_channels if spec is not None else in_channels_of(module)
    patch, batch = [int(p) for p in patch_size], int(batch_size)  # numpy integers welcome
    step = _traced(_trace_step, module, in_channels, patch, batch, precision=precision)
    optimizer_bytes = OPTIMIZER_STATE_COPIES[optimizer] * step.trainable
    step_peak = max(step.peak + step.workspace, step.after_backward + step.gradients)
    return MemoryEstimate(
        activations=step.activations, parameters=step.parameters, gradients=step.gradients,
        optimizer=optimizer_bytes, total=step.parameters + optimizer_bytes + step.inputs + step_peak,
        inference=(_traced(_trace_inference, module, in_channels, patch, precision=precision) if spec is None
                   else _inference_for_spec(_spec_json(spec), tuple(patch), precision)),
    )
