"""Random training patches from preprocessed cases, read through memory maps.

`PatchDataLoader` is a batchgenerators DataLoader over the cases of a fold. Each batch is a dict
- 'data': float32 (B, C, *read), image patches; 0 where the patch extends past the case.
- 'seg': int8 (B, 1, *read), labels; -1 where the patch extends past the case.
- 'keys': the B case ids.
*read is the read size: the network patch, or a larger box that spatial augmentation crops back
to it. For a 3D configuration it is (Z, Y, X); for a 2D one (Y, X), from one Z slice.

Sampling follows nnU-Net: cases are drawn uniformly with replacement; the last third of the batch
(oversample_foreground = 0.33) is centred on a foreground voxel, chosen by drawing a label among
those the case has (its stored class_locations) and then one of that label's sampled locations;
the other samples are placed uniformly. Only the patch is read from disk.

Randomness comes from a numpy Generator seeded from (seed, worker index), so one seed gives the
same batches run after run, and each background worker draws a different stream.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import DataLoader

from satnet.errors import InputError, MissingFileError
from satnet.io.cases import case_paths, is_complete, load_properties

logger = logging.getLogger(__name__)

OVERSAMPLE_FOREGROUND = 0.33  # nnU-Net's oversample_foreground_percent


def derive_seed(seed: int | None, worker: int) -> int | None:
    """A 32-bit seed for worker `worker` derived from `seed`; None (fresh entropy) when seed is None."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), int(worker)]).generate_state(1)[0])


def num_foreground_samples(batch_size: int, oversample_foreground: float = OVERSAMPLE_FOREGROUND) -> int:
    """How many samples at the end of a batch are forced to contain foreground (3 of 9, 4 of 12, 1 of 2, 0 of 1)."""
    return batch_size - int(round(batch_size * (1.0 - oversample_foreground)))


def rank_foreground_samples(per_rank: int, world_size: int, rank: int,
                            oversample_foreground: float = OVERSAMPLE_FOREGROUND) -> int:
    """This rank's share of the forced-foreground samples of the global batch (per_rank * world_size).

    The rule applies to the batch the step trains on, not to each rank's part: the global batch's
    last num_foreground_samples(global) samples are forced, and rank r holds samples
    [r * per_rank, (r + 1) * per_rank). Per rank, a batch of 2 on 2 ranks would force none
    (num_foreground_samples(1) == 0); this way rank 1 forces its one sample, as a single process does.
    """
    total = per_rank * world_size
    first_forced = total - num_foreground_samples(total, oversample_foreground)
    low, high = rank * per_rank, (rank + 1) * per_rank
    return max(0, high - max(low, first_forced))


def _foreground_locations(props_class_locations: dict[str, list[list[int]]]) -> list[np.ndarray]:
    """The non-empty (N, 3) location arrays of the foreground labels (label > 0), in label order."""
    found = []
    for label in sorted(props_class_locations, key=float):
        locations = props_class_locations[label]
        if float(label) > 0 and len(locations) > 0:
            found.append(np.asarray(locations, dtype=np.int64).reshape(-1, 3))
    return found


def _patch_start(
    shape: Sequence[int], final: Sequence[int], read: Sequence[int], rng: np.random.Generator,
    centre: Sequence[int] | None = None,
) -> np.ndarray:
    """Start (may be negative) of the `read`-sized box, per axis, for a case of spatial `shape`.

    The network patch `final` sits at the centre of the read box. It is placed uniformly where it
    lies inside the case (or, for a case smaller than it, where it contains the case), or as close
    to centred on `centre` as those bounds allow.
    """
    shape, final, read = (np.asarray(v, dtype=np.int64) for v in (shape, final, read))
    low = np.minimum(0, shape - final)
    high = np.maximum(0, shape - final)
    if centre is None:
        start = rng.integers(low, high + 1)
    else:
        start = np.clip(np.asarray(centre) - final // 2, low, high)
    return start - (read - final) // 2


def _copy_box(source: np.ndarray, start: np.ndarray, out: np.ndarray) -> None:
    """Copy the part of source[:, box] that exists into out (C, *size); the rest of out is left as is.

    `source` is (C, *spatial) (a memory map: only the box is read); the box begins at `start`.
    """
    size = np.asarray(out.shape[1:])
    shape = np.asarray(source.shape[1:])
    lo = np.maximum(start, 0)
    hi = np.minimum(start + size, shape)
    if np.any(hi <= lo):
        return
    src = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))
    dst = (slice(None),) + tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
    out[dst] = source[src]


def _open_case(folder: Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory maps of a case's image (C, Z, Y, X) and labels (1, Z, Y, X); nothing is read yet.

    Not `load_case`, which also parses the properties JSON (thousands of sampled locations) on
    every call: the loader keeps the locations it needs from construction.
    """
    image_path, seg_path, _ = case_paths(folder, case_id)
    return np.load(image_path, mmap_mode="r", allow_pickle=False), np.load(seg_path, mmap_mode="r", allow_pickle=False)


class PatchDataLoader(DataLoader):
    """Batches of random patches from the preprocessed cases `case_ids` in `folder`.

    - patch_size: the network's patch, (Z, Y, X) or (Y, X) for 2D.
    - read_size: the size actually read (same axes), at least patch_size, larger when spatial
      augmentation crops it back (see satnet.training.augmentation.enlarged_patch_size).
    - oversample_foreground: the fraction of each batch, taken from its end, centred on foreground.
    - seed: None for fresh entropy; an int for reproducible batches.
    - num_foreground: how many samples, from the batch's end, to centre on foreground, instead of
      the share of oversample_foreground (a DDP rank's share of the global batch's, see
      rank_foreground_samples).
    """

    def __init__(
        self,
        folder: str | Path,
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        read_size: Sequence[int] | None = None,
        oversample_foreground: float = OVERSAMPLE_FOREGROUND,
        seed: int | None = None,
        num_foreground: int | None = None,
    ):
        case_ids = list(case_ids)
        super().__init__(case_ids, batch_size, num_threads_in_multithreaded=1, infinite=True)
        self.folder = Path(folder)
        self.patch_size = [int(p) for p in patch_size]
        self.read_size = [int(p) for p in (read_size if read_size is not None else patch_size)]
        self._check_arguments(case_ids, oversample_foreground)
        self.case_ids = case_ids
        self.indices = np.arange(len(case_ids))
        self.num_foreground = (num_foreground_samples(batch_size, oversample_foreground) if num_foreground is None
                               else min(int(num_foreground), batch_size))
        self.locations = [_foreground_locations(load_properties(self.folder, c).class_locations) for c in case_ids]
        self.seed = seed
        self.rng = np.random.default_rng(derive_seed(seed, 0))
        without = sum(1 for loc in self.locations if not loc)
        if without:
            logger.info("%d of %d cases in %s have no foreground locations", without, len(case_ids), self.folder)

    def _check_arguments(self, case_ids: list[str], oversample_foreground: float) -> None:
        if not case_ids:
            raise InputError(f"no cases given for training patches from {self.folder}; check the split file")
        missing = [c for c in case_ids if not is_complete(self.folder, c)]
        if missing:
            raise MissingFileError(
                f"{len(missing)} of {len(case_ids)} cases are not preprocessed in {self.folder} (first: {missing[0]}); "
                "run `satnet plan-and-preprocess` (or `satnet preprocess`) first"
            )
        unlabelled = [c for c in case_ids if not case_paths(self.folder, c)[1].is_file()]
        if unlabelled:
            raise MissingFileError(
                f"{len(unlabelled)} training cases in {self.folder} have no label file (first: "
                f"{case_paths(self.folder, unlabelled[0])[1].name}); preprocess the cases with their labels"
            )
        if len(self.patch_size) not in (2, 3) or len(self.read_size) != len(self.patch_size):
            raise InputError(f"patch_size must have 2 or 3 entries and read_size as many, not {self.patch_size}, {self.read_size}")
        if any(r < p for r, p in zip(self.read_size, self.patch_size)) or min(self.patch_size) < 1:
            raise InputError(f"read_size {self.read_size} must be at least patch_size {self.patch_size}, per axis, >= 1")
        if not 0.0 <= oversample_foreground <= 1.0:
            raise InputError(f"oversample_foreground must be in [0, 1], not {oversample_foreground}")

    def set_thread_id(self, thread_id: int) -> None:
        """Called first thing in each (forked) worker process: set the worker up.

        - Its own random streams: this loader's generator, and the Python `random` module, which
          batchgenerators' GaussianNoiseTransform draws from and MultiThreadedAugmenter leaves
          unseeded (forked workers would all share one sequence). numpy's global state is seeded
          by MultiThreadedAugmenter itself.
        - Single-threaded torch, as torch's own DataLoader workers: once the parent has run a
          parallel torch op, OpenMP's thread pool does not survive the fork, and the worker's
          first parallel op (converting a large batch to tensors) would wait forever.
        """
        torch.set_num_threads(1)
        super().set_thread_id(thread_id)
        seed = derive_seed(self.seed, thread_id)
        self.rng = np.random.default_rng(seed)
        random.seed(seed)

    def generate_train_batch(self) -> dict:
        b = self.batch_size
        chosen = self.rng.integers(0, len(self.case_ids), size=b)
        cases = [_open_case(self.folder, self.case_ids[i]) for i in chosen]
        channels = {image.shape[0] for image, _ in cases}
        if len(channels) > 1:
            raise InputError(
                f"the cases {sorted(set(self.case_ids[i] for i in chosen))} in {self.folder} differ in their number "
                f"of channels ({sorted(channels)}); rerun `satnet preprocess`"
            )
        data = np.zeros((b, channels.pop(), *self.read_size), dtype=np.float32)  # (B, C, *read)
        seg = np.full((b, 1, *self.read_size), -1, dtype=np.int8)  # (B, 1, *read)
        for i, (index, (image, labels)) in enumerate(zip(chosen, cases)):
            force = i >= b - self.num_foreground
            self._sample(image, labels, self.locations[index], force, data[i], seg[i])
        return {"data": data, "seg": seg, "keys": [self.case_ids[i] for i in chosen]}

    def _sample(
        self, image: np.ndarray, seg: np.ndarray, locations: list[np.ndarray], force_foreground: bool,
        data_out: np.ndarray, seg_out: np.ndarray,
    ) -> None:
        """Fill data_out (C, *read) and seg_out (1, *read) from a case's image (C, Z, Y, X) and seg (1, Z, Y, X)."""
        centre = None
        if force_foreground and locations:
            label_locations = locations[self.rng.integers(len(locations))]
            centre = label_locations[self.rng.integers(len(label_locations))]  # (z, y, x)
        if len(self.patch_size) == 2:  # one Z slice: the foreground location's, or a random one
            z = int(centre[0]) if centre is not None else int(self.rng.integers(image.shape[1]))
            image, seg = image[:, z], seg[:, z]
            centre = centre[1:] if centre is not None else None
        start = _patch_start(image.shape[1:], self.patch_size, self.read_size, self.rng, centre)
        _copy_box(image, start, data_out)
        _copy_box(seg, start, seg_out)
