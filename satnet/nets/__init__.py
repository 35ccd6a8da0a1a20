"""Segmentation networks with SAT skip connections; see docs/architecture.md.

    from satnet.nets import build_network
    model = build_network(plans["configurations"]["3d"]["network"])  # a NetworkSpec or its dict
"""
from __future__ import annotations

from satnet.nets.blocks import SegmentationNetwork
from satnet.nets.di2in import DI2IN
from satnet.nets.gate import SkipGate, keras_glorot_limit, trelu
from satnet.nets.registry import (
    INIT_SCHEMES,
    NETWORKS,
    activation_bytes,
    build_network,
    count_parameters,
    deep_supervision_offsets,
    deep_supervision_scales,
    encoder_channels,
    gate_fraction_off,
    init_weights,
    parameter_table,
    reference_spec,
    set_gate_recording,
)
from satnet.nets.spec import ARCH_NAMES, GATE_INITS, NORMS, SKIP_MODES, NetworkSpec
from satnet.nets.tiramisu import Tiramisu
from satnet.nets.unet import UNet
from satnet.nets.vnet import VNet

__all__ = [
    "ARCH_NAMES", "DI2IN", "GATE_INITS", "INIT_SCHEMES", "NETWORKS", "NORMS", "SKIP_MODES",
    "NetworkSpec", "SegmentationNetwork", "SkipGate", "Tiramisu", "UNet", "VNet",
    "activation_bytes", "build_network", "count_parameters", "deep_supervision_offsets", "deep_supervision_scales", "encoder_channels", "gate_fraction_off",
    "init_weights", "keras_glorot_limit", "parameter_table", "reference_spec", "set_gate_recording", "trelu",
]
