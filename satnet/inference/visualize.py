"""`satnet visualize`: what the SAT gates of a trained network do on one scan.

For one scan the network is run on one patch (the patch at the centre of the preprocessed
scan; for a 2d configuration the slice with the most predicted foreground) with gate recording
on. Written to OUT_DIR:
- `attention_<gate>.png`: each attending gate's attention map (at, sat), upsampled to the patch
  and laid over the image slice with the most predicted foreground (the SAT paper's Figs. 6-7);
- `select_weights.png`: per selecting gate (st, sat) a bar chart of trelu(W) per channel, with
  the fraction of channels off (W <= 0) in its title (the paper's Fig. 5);
- `gates.json`: the numbers behind both (per gate: mode, channels, fraction off, trelu(W),
  attention statistics) and which slice was shown.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from satnet.contracts import atomic_write, atomic_write_json
from satnet.errors import ConfigError, InputError
from satnet.inference.models import load_configuration
from satnet.io.images import read_image
from satnet.names import DEFAULT_CHECKPOINT
from satnet.nets import set_gate_recording
from satnet.preprocessing.case import preprocess_case

log = logging.getLogger(__name__)


def channel_files(scan: Path, file_ending: str) -> tuple[str, list[Path]]:
    """The case id and all channel files of the case that `scan` ({case}_{ch:04d}{ending}) belongs to."""
    name = scan.name
    m = re.match(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$", name)
    if not scan.is_file() or m is None:
        raise InputError(
            f"scan {scan} must be an existing file named {{case}}_0000{file_ending} (the plans' file ending); "
            f"give the first channel file of the case"
        )
    case = m.group(1)
    files, c = [], 0
    while (scan.parent / f"{case}_{c:04d}{file_ending}").is_file():
        files.append(scan.parent / f"{case}_{c:04d}{file_ending}")
        c += 1
    if not files:
        raise InputError(f"{scan.parent} has no {case}_0000{file_ending}; give the first channel file with -i")
    return case, files


def _center_patch(data: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Crop or zero-pad (C, *spatial) around its centre to `patch` spatial size."""
    out = np.zeros((data.shape[0], *patch), dtype=np.float32)
    src, dst = [], []
    for size, p in zip(data.shape[1:], patch):
        n = min(size, p)
        s0, d0 = (size - n) // 2, (p - n) // 2
        src.append(slice(s0, s0 + n))
        dst.append(slice(d0, d0 + n))
    out[(slice(None), *dst)] = data[(slice(None), *src)]
    return out


def _network_input(network, data: np.ndarray, patch: Sequence[int]) -> tuple[torch.Tensor, int]:
    """The (1, C, *patch) input and the Z slice (of the patch or volume) to show."""
    if len(patch) == 3:
        x = torch.from_numpy(_center_patch(data, patch))[None]
        with torch.no_grad():
            fg = (network(x).argmax(1)[0] > 0).sum(dim=(1, 2))  # foreground per Z slice
        return x, int(fg.argmax()) if fg.max() > 0 else patch[0] // 2
    slices = torch.from_numpy(np.stack([_center_patch(data[:, z], patch) for z in range(data.shape[1])]))
    with torch.no_grad():
        fg = torch.cat([(network(b).argmax(1) > 0).sum(dim=(1, 2)) for b in slices.split(16)])
    z = int(fg.argmax()) if fg.max() > 0 else data.shape[1] // 2
    return slices[z : z + 1], z


def visualize_scan(
    work_dir: str | Path, config: str, fold: str, scan: str | Path, out_dir: str | Path, checkpoint: str = DEFAULT_CHECKPOINT
) -> dict:
    """Write the gate pictures and gates.json for one scan; returns the JSON content."""
    models = load_configuration(work_dir, config, [str(fold)], checkpoint, "cpu", "visualize")
    network, plan, plans = models.networks[0], models.plan, models.plans
    gates = [(name, g) for name, g in network.gates() if g.skip != "org"]
    if not gates:
        raise ConfigError(f"configuration {config!r} uses skip 'org': it has no gates to visualise; pick a "
                          f"configuration with skip st, at or sat")
    case_id, files = channel_files(Path(scan), plans.file_ending)
    image, geometry = read_image(files)
    if image.shape[0] != len(plans.channel_names):
        raise InputError(f"{scan}: {image.shape[0]} channel(s), but {config} was trained on "
                         f"{len(plans.channel_names)}; give a scan of the same kind as the training images")
    data, _, _ = preprocess_case(image, geometry, None, plan, case_id, plans.labels)
    x, z = _network_input(network, data, plan.patch_size)
    set_gate_recording(network, True)
    try:
        with torch.no_grad():
            network(x)
        recorded = {name: (g.last_select, g.last_attention) for name, g in gates}
    finally:
        set_gate_recording(network, False)
    background = x[0, :, z] if x.ndim == 5 else x[0]  # (C, Y, X)
    out_dir = Path(out_dir)
    report = {"case": case_id, "config": config, "fold": str(fold), "checkpoint": checkpoint,
              "slice": {"axis": "ZYX"[plan.axis_order[0]], "index": z, "of": "patch" if x.ndim == 5 else "volume"},
              "gates": []}
    for name, gate in gates:
        entry: dict = {"name": name, "mode": gate.skip, "channels": gate.channels, "maps": gate.out_channels
                       if gate.attend is not None else None}
        select, attention = recorded[name]
        if select is not None:
            w = select.float().numpy()
            entry.update(fraction_off=float((w <= 0).mean()), trelu_w=[round(float(v), 6) for v in w])
        if attention is not None:
            # k > 1 maps: the picture shows their mean, the JSON each map's statistics
            maps = F.interpolate(attention.float(), size=tuple(x.shape[2:]), mode="nearest")[0]
            att = maps.mean(0)
            att_slice = att[z] if x.ndim == 5 else att
            entry["attention"] = {"mean": float(att.mean()), "min": float(att.min()), "max": float(att.max()),
                                  "shape": list(attention.shape[2:]),
                                  "per_map_mean": [float(m.mean()) for m in maps]}
            entry["attention_png"] = _plot_attention(out_dir / f"attention_{name}.png", background, att_slice.numpy(),
                                                     f"{config} {name} ({gate.skip}"
                                                     f"{f', mean of {len(maps)} maps' if len(maps) > 1 else ''}) on {case_id}"
                                                     + _slice_words(report["slice"], x.ndim))
        report["gates"].append(entry)
    selecting = [e for e in report["gates"] if "trelu_w" in e]
    if selecting:
        report["select_png"] = _plot_select(out_dir / "select_weights.png", selecting, f"{config} on {case_id}")
    atomic_write_json(out_dir / "gates.json", report)
    return report


def _save_figure(fig, path: Path) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))
    return path.name


def _gray(background: torch.Tensor) -> np.ndarray:
    img = background.float().numpy()
    img = np.moveaxis(img, 0, -1) if img.shape[0] == 3 else img[0]
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1)


def _slice_words(where: dict, ndim: int) -> str:
    """'\naxial slice Z = 12 of the patch (preprocessed grid)' for a 3D input (a slice across the scans' Y or X
    axis where the configuration put that axis first); '' for 2D."""
    kind = "axial slice" if where["axis"] == "Z" else "slice"
    return "" if ndim != 5 else f"\n{kind} {where['axis']} = {where['index']} of the {where['of']} (preprocessed grid)"


def _plot_attention(path: Path, background: torch.Tensor, attention: np.ndarray, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    img = _gray(background)
    for ax in axes:
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.axis("off")
    shown = axes[1].imshow(attention, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[0].set_title("image")
    axes[1].set_title("attention")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    fig.suptitle(title)
    name = _save_figure(fig, path)
    plt.close(fig)
    return name


def _plot_select(path: Path, entries: list[dict], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(entries), 1, figsize=(8, 1.6 * len(entries) + 0.6), squeeze=False)
    for ax, e in zip(axes[:, 0], entries):
        ax.bar(np.arange(len(e["trelu_w"])), e["trelu_w"], width=1.0, color="tab:blue")
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.5, len(e["trelu_w"]) - 0.5)
        ax.set_ylabel("trelu(W)")
        ax.set_title(f"{e['name']} ({e['mode']}): {e['channels']} channels, {100 * e['fraction_off']:.1f}% off",
                     fontsize=9)
    axes[-1, 0].set_xlabel("channel")
    fig.suptitle(title)
    fig.tight_layout()
    name = _save_figure(fig, path)
    plt.close(fig)
    return name
