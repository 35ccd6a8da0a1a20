"""Build networks by name, initialise their weights, and report on them (parameters, gates, scales).

Everything the trainer, the planner and the memory model need from `satnet.nets` goes through
here; the registry is a plain dict from `NetworkSpec.arch` to a class (no package scanning).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from satnet.errors import unknown_name_error
from satnet.names import INIT_SCHEMES
from satnet.nets.blocks import SegmentationNetwork
from satnet.nets.di2in import DI2IN
from satnet.nets.gate import iter_gates
from satnet.nets.spec import ARCH_NAMES, SKIP_MODES, NetworkSpec
from satnet.nets.tiramisu import Tiramisu, tiramisu_widths
from satnet.nets.unet import UNet
from satnet.nets.vnet import VNet

NETWORKS: dict[str, type[SegmentationNetwork]] = {
    "unet": UNet, "vnet": VNet, "tiramisu": Tiramisu, "di2in": DI2IN,
}


def as_spec(spec: NetworkSpec | Mapping[str, Any]) -> NetworkSpec:
    """A NetworkSpec from itself or its dict (plans.json `configurations.<name>.network`), validated."""
    if isinstance(spec, NetworkSpec):
        return spec
    return NetworkSpec.from_dict(dict(spec), "network spec")


def build_network(spec: NetworkSpec | Mapping[str, Any], init: str = "he") -> SegmentationNetwork:
    """Build the network a spec describes, with weights initialised by `init` ("he" or "glorot").

    An unknown arch, skip, gate_init or norm raises ConfigError listing the valid names.
    """
    spec = as_spec(spec)
    if spec.arch not in NETWORKS:
        raise unknown_name_error("arch", spec.arch, NETWORKS)
    model = NETWORKS[spec.arch](spec)
    init_weights(model, init)
    return model


def init_weights(model: nn.Module, scheme: str = "he") -> nn.Module:
    """Initialise every (transposed) convolution of `model` in place; biases to 0.

    "he": kaiming_normal_(a=0.01), nnU-Net's default for LeakyReLU networks. "glorot": Xavier
    uniform, the Keras default the SAT paper trained with (Adadelta). Norm layers, PReLU slopes
    and the gates' select weights W (set by gate_init) are left as they are.
    """
    if scheme not in INIT_SCHEMES:
        raise unknown_name_error("init scheme", scheme, INIT_SCHEMES)
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    for module in model.modules():
        if isinstance(module, convs):
            if scheme == "he":
                nn.init.kaiming_normal_(module.weight, a=1e-2)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def gate_fraction_off(model: nn.Module) -> dict[str, float]:
    """Fraction of channels switched off (W <= 0) per gate name, for gates with select weights (st, sat)."""
    return {name: off for name, gate in iter_gates(model) if (off := gate.fraction_off()) is not None}


def set_gate_recording(model: nn.Module, on: bool = True) -> None:
    """Make every gate keep (on) or stop keeping its last attention map and trelu(W) (see SkipGate)."""
    for _, gate in iter_gates(model):
        gate.record = on
        if not on:
            gate.last_attention = gate.last_select = None


def encoder_channels(spec: NetworkSpec | Mapping[str, Any]) -> list[int]:
    """Channels of each encoder stage's output (the skips, then the bottleneck), shallow to deep."""
    spec = as_spec(spec)
    return tiramisu_widths(spec) if spec.arch == "tiramisu" else list(spec.features)


def deep_supervision_scales(spec: NetworkSpec | Mapping[str, Any]) -> list[list[float]]:
    """Per-axis scale of each deep-supervision output relative to the input, [full, ...]: one per
    decoder stage (num_stages - 1 entries), e.g. [[1, 1], [0.5, 0.5], ...] for stride-2 stages."""
    spec = as_spec(spec)
    scales, current = [], [1.0] * spec.spatial_dims
    for stride in spec.strides[:-1]:
        current = [c / s for c, s in zip(current, stride)]
        scales.append(current)
    return scales


def deep_supervision_offsets(spec: NetworkSpec | Mapping[str, Any]) -> list[list[float]]:
    """Where each deep-supervision output's voxels lie on the input grid: per output (as
    `deep_supervision_scales`) and axis an offset o such that voxel i of an output at factor f is
    centred on input position f*i + o. 0 where the network downsamples with strided 'same'
    convolutions (unet, di2in); (f - 1) / 2 where it downsamples with kernel = stride (vnet, tiramisu),
    a half-integer at even factors: the centre of the f input voxels the output voxel covers
    (SegmentationNetwork.downsampling; tests/nets/test_deep_supervision_geometry.py measures it)."""
    spec = as_spec(spec)
    block = NETWORKS[spec.arch].downsampling == "block"
    return [[(round(1.0 / s) - 1) / 2 if block else 0.0 for s in scale] for scale in deep_supervision_scales(spec)]


def count_parameters(spec: NetworkSpec | Mapping[str, Any]) -> int:
    """Number of trainable parameters of the network `spec` describes (built on the meta device: no memory)."""
    spec = as_spec(spec)
    with torch.device("meta"):
        model = NETWORKS[spec.arch](spec)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def activation_bytes(spec: NetworkSpec | Mapping[str, Any], patch_size: Sequence[int], batch_size: int = 1) -> int:
    """Bytes of the activations autograd keeps for backward in one fp32 training forward.

    The network runs on the meta device (no memory, a fraction of a second for large 3D patches),
    and every distinct storage saved for backward is counted once: exactly what a CPU forward of
    the same batch saves (the tests check). Weights, gradients, optimizer state and backward's
    transient buffers are not included. Under autocast about half (satnet.planning.memory models
    a step at any precision exactly).
    """
    spec = as_spec(spec)
    with torch.device("meta"):
        model = NETWORKS[spec.arch](spec).train()
        x = torch.empty(batch_size, spec.in_channels, *patch_size)
    return saved_storage_bytes(model, x)


def saved_storage_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward while `model(x)` runs, less those of
    the model's parameters and buffers and of the input `x` (saved too, but not activations)."""
    storages: list[torch.UntypedStorage] = []  # kept alive so that no storage address is reused meanwhile
    sizes: dict[int, int] = {}
    ignored = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers(), x)}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages.append(storage)
        if storage._cdata not in ignored:
            sizes[storage._cdata] = storage.nbytes()  # the storage's address: data_ptr() is 0 on meta
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(sizes.values())


def reference_spec(arch: str, spatial_dims: int, skip: str, **changes: Any) -> NetworkSpec:
    """The reference size of the parameter table: 5 stages, 1 input channel, 3 classes, no deep
    supervision; features 32-64-128-256-320 (tiramisu: first conv 48, growth 16, dense blocks
    4-5-7-10 and a bottleneck of 12, FC-DenseNet103 one stage shallower); kernel 3 (vnet 5);
    stride 2 per axis. `changes` overrides fields."""
    n = 5
    kernel = 5 if arch == "vnet" else 3
    fields: dict[str, Any] = dict(
        arch=arch, spatial_dims=spatial_dims, in_channels=1, num_classes=3,
        features=[48] * n if arch == "tiramisu" else [32, 64, 128, 256, 320],
        kernel_sizes=[[kernel] * spatial_dims] * n,
        strides=[[1] * spatial_dims] + [[2] * spatial_dims] * (n - 1),
        convs_per_stage=[4, 5, 7, 10, 12] if arch == "tiramisu" else None,
        skip=skip, deep_supervision=False,
    )
    fields.update(changes)
    return NetworkSpec(**fields)


def parameter_table(spatial_dims: tuple[int, ...] = (2, 3)) -> list[dict[str, Any]]:
    """Parameter count of every arch x spatial_dims x skip at the reference size (`reference_spec`).

    Rows: {"arch", "spatial_dims", "skip", "parameters", "change_vs_org"} (change as a fraction, e.g. -0.25).
    """
    rows = []
    for arch in ARCH_NAMES:
        for dims in spatial_dims:
            org = count_parameters(reference_spec(arch, dims, "org"))
            for skip in SKIP_MODES:
                count = count_parameters(reference_spec(arch, dims, skip))
                rows.append(dict(arch=arch, spatial_dims=dims, skip=skip, parameters=count,
                                 change_vs_org=count / org - 1.0))
    return rows

