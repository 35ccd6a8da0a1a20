"""Short-budget nnU-Net v2 trainers for satnet's side-by-side CPU benchmarks (docs/peers.md).

This file runs inside nnU-Net, not satnet: `benchmarks/peers/setup_nnunet.sh` copies it to
`nnunetv2/training/nnUNetTrainer/nnUNetTrainer_satnetPeers.py` in the nnU-Net venv, because
nnU-Net finds trainers only inside its own package (`-tr NAME`). Both trainers keep nnU-Net's
recipe (network, loss, augmentation, SGD with poly learning rate) and change only how long it
runs, read from environment variables because `nnUNetv2_train` has no flags for that.
NNUNET_TORCH_THREADS (default: nnUNetv2_train's, one per core) sets torch's threads for both.

nnUNetTrainer_satnetBudget
    NNUNET_EPOCHS (default 1000), NNUNET_ITERS (250), NNUNET_VAL_ITERS (50): nnU-Net's epochs,
    training iterations per epoch and validation iterations per epoch. The poly learning rate
    anneals over NNUNET_EPOCHS, so choose epochs x iterations that fit the budget.
    NNUNET_BUDGET_MIN (0 = no budget): wall-clock minutes, counted from the first training
    iteration. The budget is checked before every training iteration; once it is spent the
    epoch ends early, its validation batches run, and checkpoint_final.pth is written as at a
    normal end.
    NNUNET_FINAL_VALIDATION (0): 1 runs nnU-Net's own export of every validation case after
    training. Off by default: benchmarks/peers/run_nnunet.py predicts and times those cases itself.
    Writes fold_X/peers_training.json (epochs and iterations done, wall seconds, settings).

nnUNetTrainer_satnetTiming
    NNUNET_TIMING_WARMUP (3) then NNUNET_TIMING_ITERS (10) training iterations, each timed as the
    wait for the next augmented batch plus the training step; writes
    fold_X/peers_iteration_timing.json and stops (no validation, no checkpoint).
"""
from __future__ import annotations

import json
import os
import time
from statistics import median

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA


def _env_number(name: str, default: float, kind: type = int) -> float:
    """The environment variable `name` as a non-negative `kind`, or `default` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {raw!r}")
    return value


def _write_json(path: str, data: dict) -> None:
    """Write `data` to `path` atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


class _PeersTrainerBase(nnUNetTrainer):
    """NNUNET_TORCH_THREADS, and what both trainers report about the run's set-up."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # nnUNetv2_train sets as many threads as cores on the CPU; a busy machine may prefer fewer.
        threads = int(_env_number("NNUNET_TORCH_THREADS", 0))
        if threads:
            torch.set_num_threads(threads)

    def _setup_record(self) -> dict:
        return {
            "trainer": self.__class__.__name__,
            "configuration": self.configuration_name,
            "fold": self.fold,
            "device": str(self.device),
            "batch_size": int(self.batch_size),
            "patch_size": [int(p) for p in self.configuration_manager.patch_size],
            "n_proc_DA": get_allowed_n_proc_DA(),
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
        }


class nnUNetTrainer_satnetBudget(_PeersTrainerBase):
    """nnU-Net's trainer with epochs, iterations and a wall-clock budget from the environment."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(_env_number("NNUNET_EPOCHS", 1000))
        self.num_iterations_per_epoch = int(_env_number("NNUNET_ITERS", 250))
        self.num_val_iterations_per_epoch = int(_env_number("NNUNET_VAL_ITERS", 50))
        self.budget_s = 60.0 * _env_number("NNUNET_BUDGET_MIN", 0.0, float)
        self.final_validation = bool(_env_number("NNUNET_FINAL_VALIDATION", 0))
        if min(self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch) < 1:
            raise ValueError("NNUNET_EPOCHS, NNUNET_ITERS and NNUNET_VAL_ITERS must be at least 1")

    def run_training(self) -> None:
        """nnU-Net's loop (nnUNetTrainer.run_training), stopping mid-epoch once the budget is spent."""
        started = time.perf_counter()
        self.on_train_start()
        loop_started = time.perf_counter()
        iterations = 0
        stopped_by_budget = False
        for _ in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                if self.budget_s and time.perf_counter() - loop_started >= self.budget_s:
                    stopped_by_budget = True
                    break
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                iterations += 1
            if train_outputs:
                self._finish_epoch(train_outputs)
            if stopped_by_budget:
                break
        loop_s = time.perf_counter() - loop_started
        self.on_train_end()
        record = self._setup_record() | {
            "epochs_planned": self.num_epochs,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "budget_s": self.budget_s or None,
            "stopped_by_budget": stopped_by_budget,
            "epochs_completed": self.current_epoch,
            "iterations_completed": iterations,
            "loop_s": round(loop_s, 3),
            "train_s": round(time.perf_counter() - started, 3),
        }
        _write_json(os.path.join(self.output_folder, "peers_training.json"), record)
        self.print_to_log_file(f"peers: {iterations} iterations in {loop_s:.1f} s, "
                               f"{self.current_epoch} epochs, stopped by budget: {stopped_by_budget}")

    def _finish_epoch(self, train_outputs: list[dict]) -> None:
        """The end of one epoch as nnU-Net does it: log the loss, validate, checkpoint."""
        self.on_train_epoch_end(train_outputs)
        with torch.no_grad():
            self.on_validation_epoch_start()
            val_outputs = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]
            self.on_validation_epoch_end(val_outputs)
        self.on_epoch_end()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if self.final_validation:
            super().perform_actual_validation(save_probabilities)
        else:
            self.print_to_log_file("peers: final validation skipped (NNUNET_FINAL_VALIDATION=0)")


class nnUNetTrainer_satnetTiming(_PeersTrainerBase):
    """Times a fixed number of training iterations at the plan's batch and patch, then stops."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.warmup = int(_env_number("NNUNET_TIMING_WARMUP", 3))
        self.timed_iterations = int(_env_number("NNUNET_TIMING_ITERS", 10))
        if self.timed_iterations < 1:
            raise ValueError("NNUNET_TIMING_ITERS must be at least 1")
        self.disable_checkpointing = True

    def run_training(self) -> None:
        self.on_train_start()
        self.on_train_epoch_start()
        data_s, step_s = [], []
        for _ in range(self.warmup + self.timed_iterations):
            t0 = time.perf_counter()
            batch = next(self.dataloader_train)
            t1 = time.perf_counter()
            self.train_step(batch)
            t2 = time.perf_counter()
            data_s.append(t1 - t0)
            step_s.append(t2 - t1)
        self.on_train_end()
        data_s, step_s = data_s[self.warmup:], step_s[self.warmup:]
        total_s = [d + s for d, s in zip(data_s, step_s)]
        record = self._setup_record() | {
            "warmup_iterations": self.warmup,
            "timed_iterations": self.timed_iterations,
            "median_s_per_iteration": round(median(total_s), 4),
            "median_data_wait_s": round(median(data_s), 4),
            "median_step_s": round(median(step_s), 4),
            "s_per_iteration": [round(t, 4) for t in total_s],
            "data_wait_s": [round(t, 4) for t in data_s],
            "step_s": [round(t, 4) for t in step_s],
        }
        _write_json(os.path.join(self.output_folder, "peers_iteration_timing.json"), record)
        self.print_to_log_file(f"peers: median {record['median_s_per_iteration']} s per iteration "
                               f"over {self.timed_iterations} iterations")

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("peers: timing run, no validation")
