"""TrainOptions: validation, per-optimizer defaults, resume merging; the learning-rate schedule; RNG states."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from satnet.errors import ConfigError
from satnet.nets import INIT_SCHEMES
from satnet.training import options as opts
from satnet.training.checkpointing import capture_rng, restore_rng
from satnet.training.distributed import per_rank_batch_size
from satnet.training.loop import make_precision
from satnet.training.options import TrainOptions, given_fields, merge_for_resume, resolve_options
from satnet.training.budget import learning_rate


def test_defaults_are_nnunets_recipe():
    o = resolve_options(TrainOptions(seed=1, workers=0), plan_batch_size=2, cuda_available=False)
    assert (o.epochs, o.iterations_per_epoch, o.val_iterations) == (1000, 250, 50)
    short = resolve_options(TrainOptions(seed=1, workers=0, iterations_per_epoch=20), 2, cuda_available=False)
    assert short.val_iterations == 4  # one per five, as nnU-Net's 50 per 250: not 50 batches for 20
    assert resolve_options(TrainOptions(seed=1, workers=0, iterations_per_epoch=2), 2, False).val_iterations == 1
    assert (o.optimizer, o.lr, o.momentum, o.weight_decay, o.lr_schedule, o.poly_exponent, o.grad_clip) == (
        "sgd", 0.01, 0.99, 3e-5, "poly", 0.9, 12.0)
    assert (o.init, o.batch_size, o.device, o.precision) == ("he", 2, "cpu", opts.CPU_DEFAULT_PRECISION)
    cuda = resolve_options(TrainOptions(seed=1, workers=0), plan_batch_size=2, cuda_available=True)
    assert (cuda.device, cuda.precision) == ("cuda", "fp16")  # nnU-Net's; bf16 hit a slow cuDNN kernel (docs/gpu.md)


def test_adadelta_defaults_are_the_sat_papers_and_explicit_values_win():
    o = resolve_options(TrainOptions(optimizer="adadelta", seed=1), 2, False)
    assert (o.lr, o.rho, o.eps, o.init, o.lr_schedule, o.weight_decay) == (1.0, 0.95, 1e-8, "glorot", "constant", 0.0)
    o = resolve_options(TrainOptions(optimizer="adadelta", init="he", lr=0.5, seed=1), 2, False)
    assert (o.init, o.lr) == ("he", 0.5)


def test_a_drawn_seed_is_stored_in_the_resolved_options():
    assert isinstance(resolve_options(TrainOptions(), 2, False).seed, int)


@pytest.mark.parametrize("changes, message", [
    (dict(optimizer="adam"), 'unknown optimizer "adam"'),
    (dict(precision="bf61"), 'did you mean "bf16"'),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(lr=-1.0), "lr must be a finite number > 0"),
    (dict(momentum=1.5), "momentum must be a finite number >= 0.0 and <= 1.0"),
    (dict(lr=float("nan")), "lr must be a finite number"),
])
def test_invalid_options_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainOptions(**changes)


def test_fp16_on_the_cpu_and_cuda_without_a_gpu_are_errors():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_options(TrainOptions(precision="fp16"), 2, cuda_available=False)
    with pytest.raises(ConfigError, match="--device cuda, but PyTorch sees no CUDA GPU"):
        resolve_options(TrainOptions(device="cuda"), 2, cuda_available=False)


def test_init_schemes_match_the_networks():
    assert opts.INIT_SCHEMES == INIT_SCHEMES


def test_resume_keeps_the_run_options_and_takes_machine_fields_from_now():
    stored = resolve_options(TrainOptions(epochs=10, seed=4, workers=3), 2, False)
    current = TrainOptions(epochs=20, workers=0)
    merged = merge_for_resume(stored, current, given_fields(current, None))
    assert (merged.epochs, merged.workers, merged.seed, merged.lr) == (20, 0, 4, 0.01)
    same = merge_for_resume(stored, TrainOptions(lr=0.01), {"lr": 0.01})  # equal to the stored value: fine
    assert same.lr == 0.01
    with pytest.raises(ConfigError, match=r"--optimizer adadelta \(the checkpoint was trained with sgd\)"):
        merge_for_resume(stored, TrainOptions(optimizer="adadelta"), {"optimizer": "adadelta"})


def test_poly_schedule_decays_per_epoch_to_zero_and_constant_stays():
    o = resolve_options(TrainOptions(epochs=4, seed=0), 2, False)
    assert [learning_rate(o, e) for e in range(4)] == pytest.approx([0.01 * (1 - e / 4) ** 0.9 for e in range(4)])
    assert learning_rate(o.replace(lr_schedule="constant"), 3) == 0.01


def test_per_rank_batch_size():
    assert [per_rank_batch_size(2, w) for w in (1, 2, 3)] == [2, 1, 1]
    assert per_rank_batch_size(12, 8) == 1 and per_rank_batch_size(16, 8) == 2


def test_rng_states_survive_a_weights_only_round_trip():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    np.random.normal()  # numpy's cached Gaussian is part of the state
    buf = io.BytesIO()
    torch.save(capture_rng(), buf)
    expected = (torch.rand(3), np.random.normal(size=3), [random.random() for _ in range(3)])
    restore_rng(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    again = (torch.rand(3), np.random.normal(size=3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_precision_layouts():
    cpu = torch.device("cpu")
    for precision in ("fp32", "bf16"):  # measured faster in both (docs/performance.md)
        assert make_precision(precision, cpu, 3).memory_format == torch.channels_last_3d
        assert make_precision(precision, cpu, 2).memory_format == torch.channels_last
    assert make_precision("bf16", cpu, 2).dtype is torch.bfloat16 and make_precision("fp32", cpu, 2).dtype is None


def test_epoch_line_lists_few_gates_and_summarises_many():
    from satnet.training.progress import _gates_off

    assert _gates_off({"skip0": 0.0, "skip1": 0.25}) == "skip0 0%, skip1 25%"
    many = {f"dense{i}.1": 0.1 for i in range(20)} | {"skip0": 0.5}
    assert _gates_off(many) == "12% on average over 21 gates, most in skip0 50%"


def test_fp32_cuda_training_of_a_half_precision_plan_is_warned_about():
    from satnet.training.options import precision_warning

    cuda_fp32 = TrainOptions(device="cuda", precision="fp32")
    message = precision_warning({"precision": "fp16", "gpu_memory_gb": 24.0}, cuda_fp32)
    assert "sized for fp16 training within 24 GiB" in message and "--precision fp16" in message
    assert precision_warning({"precision": "fp32", "gpu_memory_gb": 24.0}, cuda_fp32) is None
    assert precision_warning({"gpu_memory_gb": 8.0}, cuda_fp32) is None  # plans made before the flag: fp32
    assert precision_warning({"precision": "bf16"}, TrainOptions(device="cuda", precision="bf16")) is None
    assert precision_warning({"precision": "bf16"}, TrainOptions(device="cpu", precision="fp32")) is None
