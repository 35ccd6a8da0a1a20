"""satnet.nets.layers: the same functions and state_dicts as torch's layers, through the fast kernels."""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import profile

from satnet.nets import build_network
from satnet.nets.layers import Conv2d, Conv3d, InstanceNorm2d, InstanceNorm3d, convolution, preferred_memory_format
from tests.nets.tiny import SHAPES, tiny_spec

REPO = Path(__file__).resolve().parents[2]
LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def aten_ops(fn) -> set[str]:
    with profile() as prof:
        fn()
    return {event.name for event in prof.events()}


@pytest.mark.parametrize("dims", [2, 3])
def test_batch1_cpu_convolution_runs_on_onednn_and_matches_torch(dims):
    torch.manual_seed(0)
    ours, theirs = (Conv2d, nn.Conv2d) if dims == 2 else (Conv3d, nn.Conv3d)
    conv = ours(16, 16, 3, padding=1)
    reference = theirs(16, 16, 3, padding=1)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(1, 16, *([6] * dims), requires_grad=True)  # 1 * 16 * 6 * 6 <= 20480: torch's native kernel
    assert "aten::mkldnn_convolution" in aten_ops(lambda: conv(x))
    assert "aten::mkldnn_convolution" not in aten_ops(lambda: reference(x))
    out, expected = conv(x), reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight, conv.bias))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, reference.weight, reference.bias))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_convolution_leaves_autocast_batches_and_strided_inputs_to_torch():
    x, w = torch.randn(1, 4, 6, 6, 6), torch.randn(4, 4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert convolution(x, w, None, (1, 1, 1), (1, 1, 1), (1, 1, 1), 1).dtype == torch.bfloat16
    two = torch.randn(2, 4, 6, 6, 6)
    torch.testing.assert_close(convolution(two, w, None, (2, 2, 2), (1, 1, 1), (1, 1, 1), 1),
                               nn.functional.conv3d(two, w, None, 2, 1))



def test_batch1_convolution_of_fake_tensors_takes_torchs_path():
    """oneDNN's kernel needs real memory ("itensor_view_from_dense expects CPU tensor input"): fake CPU tensors
    (the memory model's FakeTensorMode trace, torch.compile, torch.export) go to F.conv3d, which they support."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    conv = Conv3d(2, 4, 3, padding=1)
    with FakeTensorMode(allow_non_fake_inputs=True):
        assert conv(torch.empty(1, 2, 5, 6, 7)).shape == (1, 4, 5, 6, 7)
    compiled = torch.compile(conv, backend="eager")
    x = torch.randn(1, 2, 5, 6, 7)
    torch.testing.assert_close(compiled(x), conv(x))

@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_instance_norm_is_torchs_function_and_keeps_the_layout(dims, layout):
    torch.manual_seed(0)
    ours, theirs = (InstanceNorm2d, nn.InstanceNorm2d) if dims == 2 else (InstanceNorm3d, nn.InstanceNorm3d)
    norm, reference = ours(8, affine=True), theirs(8, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    reference.load_state_dict(norm.state_dict())
    assert list(norm.state_dict()) == list(reference.state_dict()) == ["weight", "bias"]
    x = 3 + 2 * torch.randn(3, 8, *([5] * dims))
    if layout == "channels_last":
        x = x.contiguous(memory_format=LAST[dims])
    x.requires_grad_()
    out, expected = norm(x), reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert out.is_contiguous(memory_format=LAST[dims] if layout == "channels_last" else torch.contiguous_format)
    upstream = torch.randn(out.shape)
    grads = torch.autograd.grad(out, (x, norm.weight, norm.bias), upstream)
    expected_grads = torch.autograd.grad(expected, (x, reference.weight, reference.bias), upstream)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    if layout == "channels_last":  # satnet's own backward (_ChannelsLastInstanceNorm) keeps the layout too
        assert grads[0].is_contiguous(memory_format=LAST[dims])
    norm.eval()  # without running statistics, eval normalises by the instance's statistics too
    torch.testing.assert_close(norm(x), expected, rtol=1e-4, atol=1e-4)


class _GroupNormDtypes(torch.overrides.TorchFunctionMode):
    """Records the dtypes of the input and weight of every group_norm call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.group_norm, nn.functional.group_norm):
            weight = args[2] if len(args) > 2 else (kwargs or {}).get("weight")
            self.calls.append((args[0].dtype, weight.dtype, torch.is_autocast_enabled("cpu")))
        return func(*args, **(kwargs or {}))


def test_instance_norm_under_autocast_runs_in_the_activations_precision():
    """CUDA autocast would cast a bf16 activation up to fp32 for group_norm (an fp32 op there) and keep both
    copies for backward (docs/gpu.md); satnet's norm leaves autocast and casts its parameters down instead."""
    torch.manual_seed(0)
    norm = InstanceNorm3d(4, affine=True)
    x = (3 + 2 * torch.randn(2, 4, 5, 5, 5)).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16), _GroupNormDtypes() as seen:
        out = norm(x)
    assert seen.calls[-1] == (torch.bfloat16, torch.bfloat16, False)
    assert out.dtype == torch.bfloat16
    expected = nn.functional.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(out.float(), expected, rtol=0.02, atol=0.02)
    out.float().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32  # through the cast
    with _GroupNormDtypes() as seen:  # fp32 outside autocast: unchanged
        norm(x.float().detach())
    assert seen.calls[-1] == (torch.float32, torch.float32, False)


@pytest.mark.parametrize("mean", [0.0, 10.0, 30.0])
@pytest.mark.parametrize("autocast", [False, True])
def test_channels_last_instance_norm_is_exact_far_from_zero_mean_and_under_autocast(mean, autocast):
    """An fp32 channels_last input (under CPU autocast: the output of an op autocast runs in fp32, e.g.
    max pooling) keeps fp32 statistics; a mean many stds from 0 does not cancel its variance."""
    torch.manual_seed(0)
    norm = InstanceNorm3d(4, affine=True)
    x = (mean + torch.randn(2, 4, 6, 7, 5)).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = norm(x)
    expected = nn.functional.instance_norm(x.detach().double(), eps=norm.eps)
    assert out.dtype == torch.float32
    assert float((out.detach().double() - expected).abs().max()) < 2e-5


def test_group_norm_and_max_pooling_run_in_the_activations_precision_under_autocast():
    """CUDA autocast runs group_norm in fp32 and CPU autocast max_pool3d: either way a low-precision step
    would keep fp32 copies on one device and not on the other, which the memory model (traced under CPU
    autocast) could not know. satnet's layers run both in the activation's precision."""
    from satnet.nets.layers import GroupNorm, MaxPool3d

    x = torch.randn(2, 8, 4, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert GroupNorm(4, 8)(x).dtype == torch.bfloat16
        assert MaxPool3d(2, 2)(x).dtype == torch.bfloat16
        assert nn.MaxPool3d(2, 2)(x).dtype == torch.float32  # what torch's own layer does on the CPU
    torch.testing.assert_close(GroupNorm(4, 8)(x.float()), nn.GroupNorm(4, 8)(x.float()))


def test_channels_last_instance_norm_path_is_for_cpu_tensors_only():
    """Its forward calls native_group_norm on the channels_last memory, which CUDA's kernel refuses
    ("Expected X.is_contiguous"; seen on an H200): other devices take F.group_norm."""
    from satnet.nets.layers import _channels_last_fp32

    weight = torch.ones(4)
    for device in ("cpu", "meta"):
        x = torch.empty(2, 4, 3, 3, 3, device=device).contiguous(memory_format=torch.channels_last_3d)
        assert _channels_last_fp32(x, weight) == (device == "cpu")


def test_instance_norm_with_running_statistics_keeps_torchs_path():
    norm = InstanceNorm3d(4, affine=True, track_running_stats=True)
    norm(3 + torch.randn(2, 4, 3, 3, 3))
    assert norm.running_mean.min() > 0.1  # updated from 0 towards the mean 3 by momentum 0.1


@pytest.mark.parametrize("arch", ["unet", "vnet", "tiramisu"])
def test_networks_load_state_dicts_of_torch_layer_networks(arch):
    """A checkpoint written before these layers existed (torch's classes) loads and gives the same logits."""
    torch.manual_seed(0)
    model = build_network(tiny_spec(arch, 3, "sat")).eval()
    legacy = build_network(tiny_spec(arch, 3, "sat")).eval()
    for module in legacy.modules():  # what the same network was built from before: torch's own classes
        for ours, theirs in ((Conv3d, nn.Conv3d), (InstanceNorm3d, nn.InstanceNorm3d)):
            if type(module) is ours:
                module.__class__ = theirs
    legacy.load_state_dict(model.state_dict())
    assert list(legacy.state_dict()) == list(model.state_dict())
    x = torch.randn(1, 2, *SHAPES[3])
    with torch.no_grad():
        torch.testing.assert_close(model(x), legacy(x), rtol=1e-4, atol=1e-4)


def test_preferred_memory_format():
    assert preferred_memory_format(torch.device("cpu"), 3) == torch.channels_last_3d
    assert preferred_memory_format(torch.device("cpu"), 2) == torch.channels_last
    assert preferred_memory_format(torch.device("cuda"), 3) == torch.contiguous_format


def _as_torch_layers(network: nn.Module) -> nn.Module:
    """The same network computed by torch's own Conv and InstanceNorm classes (satnet's before this module)."""
    for module in network.modules():
        for ours, theirs in ((Conv2d, nn.Conv2d), (Conv3d, nn.Conv3d), (InstanceNorm2d, nn.InstanceNorm2d),
                             (InstanceNorm3d, nn.InstanceNorm3d)):
            if type(module) is ours:
                module.__class__ = theirs
    return network


class _Branch(nn.Module):
    """A LeakyReLU whose branch (slope 1 or `slope`) per element is given, not decided by the input's sign."""

    def __init__(self, positive: torch.Tensor, slope: float):
        super().__init__()
        self.positive, self.slope = positive, slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.where(self.positive, 1.0, self.slope).to(x.dtype)


def _training_step_gradients(net: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Parameter gradients of one step (float64 copies), and per LeakyReLU which of its inputs were > 0."""
    positive: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, inp, name=name: positive.__setitem__(name, inp[0].detach() > 0))
             for name, m in net.named_modules() if isinstance(m, nn.LeakyReLU)]
    net.zero_grad()
    outputs = net(x)
    sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outputs).backward()
    for h in hooks:
        h.remove()
    return {name: p.grad.detach().double() for name, p in net.named_parameters()}, positive


def _float64_gradients_on_the_same_branches(net: nn.Module, x: torch.Tensor,
                                            positive: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The exact (float64) gradients of the piecewise-linear function that `net`'s fp32 step evaluated.

    An fp32 forward and a float64 one may put a LeakyReLU input that lies within round-off of 0 on
    different sides of the kink, and that single element's gradient then differs by the factor 100
    between the slopes (one voxel of 24,576 moved a weight gradient by 2.7e-3 on an AVX2 CPU, from an
    input of 1e-6). That is a property of the function, not of a kernel's accuracy: the reference
    takes the branch the fp32 step took at every element (`positive`), so what remains is round-off.
    """
    reference = _as_torch_layers(copy.deepcopy(net)).double().to(memory_format=torch.contiguous_format)
    for name, mask in positive.items():
        parent, _, child = name.rpartition(".")
        slope = reference.get_submodule(name).negative_slope
        setattr(reference.get_submodule(parent) if parent else reference, child, _Branch(mask, slope))
    return _training_step_gradients(reference, x.double().contiguous())[0]


def check_training_gradients(dims: int) -> None:
    """One training step: satnet's layers in channels_last against float64, no less accurate than torch's own.

    Each fp32 network is measured against the float64 gradients of the same piecewise-linear branch
    (`_float64_gradients_on_the_same_branches`); without that, which network "lost" depended on which
    one happened to round a near-zero activation across the kink, and so on the CPU's instruction set.
    The 1e-4 floor is fp32 round-off of sums over the 24,576 voxels of a 3D stage (sqrt(V) * 2^-24 is
    1e-5; before satnet computed the channels_last norm statistics itself, its worst error was 1.4e-3).
    Biases of convolutions followed by instance norm are left out: their exact gradient is zero, what
    remains is round-off.
    """
    torch.manual_seed(0)
    spec = tiny_spec("unet", dims, "sat")
    model = build_network(spec).train().to(memory_format=LAST[dims])
    legacy = _as_torch_layers(build_network(spec).train())
    legacy.load_state_dict(model.state_dict())
    x = torch.randn(2, 2, *SHAPES[dims])
    ours, ours_branches = _training_step_gradients(model, x.contiguous(memory_format=LAST[dims]))
    theirs, theirs_branches = _training_step_gradients(legacy, x)
    ours_exact = _float64_gradients_on_the_same_branches(model, x, ours_branches)
    theirs_exact = _float64_gradients_on_the_same_branches(legacy, x, theirs_branches)
    checked = 0
    for name in ours:
        if re.search(r"stages\.\d+\.\d+\.0\.bias$", name):
            continue
        scale = ours_exact[name].abs().max().item()
        ours_error = (ours[name] - ours_exact[name]).abs().max().item() / scale
        torch_error = (theirs[name] - theirs_exact[name]).abs().max().item() / scale
        assert ours_error <= 2 * torch_error + 1e-4, (name, ours_error, torch_error)
        checked += 1
    assert checked > 10


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_training_gradients_are_as_accurate_as_torch_layers(dims):
    check_training_gradients(dims)


@pytest.mark.slow
def test_training_gradients_hold_on_an_avx2_cpu():
    """The same check with oneDNN and ATen's kernels capped at AVX2, in a fresh process (the caps are read
    once, at start-up), so an AVX-512 machine tests the kernels an AVX2-only CPU runs: the 3D case failed
    there before (a one-voxel kink flip judged against torch's layers, which flipped none on AVX2)."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = ("import torch; from tests.nets.test_layers import check_training_gradients;"
            "assert torch.backends.cpu.get_cpu_capability() == 'AVX2', torch.backends.cpu.get_cpu_capability();"
            "[check_training_gradients(d) for d in (2, 3)]")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
