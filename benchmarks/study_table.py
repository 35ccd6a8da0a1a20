"""The skip study's table (benchmarks/study.py `table`): every (dataset, configuration) over its seeds, the
paired differences to ORG, the Dice curves, and the rule that picks the planner's default (issue 15, item 5).
Reads the runs' JSONL and the side-by-side step times that study.py writes; tested by benchmarks/test_study.py."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "study_runs.jsonl"
SPEED = ROOT / "benchmarks" / "results" / "study_speed.json"


def load_speed(path: Path = SPEED) -> dict[str, dict[str, dict]]:
    return json.loads(path.read_text()) if path.is_file() else {}



# ---------------------------------------------------------------------------------------------
# The table: every (dataset, configuration) over its seeds


def load_rows(path: Path = RUNS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def paired_to_org(rows: list[dict], org_rows: list[dict], label: str) -> dict | None:
    """Dice differences (variant - org) pooled over the seeds both have and their common cases: mean, the
    std of the per-seed mean differences, n, and the two-sided Wilcoxon signed-rank p of the pooled pairs."""
    from scipy.stats import wilcoxon

    org_by_seed = {r["seed"]: r for r in org_rows}
    pooled, per_seed = [], []
    for r in rows:
        org = org_by_seed.get(r["seed"])
        if org is None:
            continue
        diffs = [r["case_dice"][c][label] - org["case_dice"][c][label] for c in r["case_dice"]
                 if c in org["case_dice"] and r["case_dice"][c].get(label) is not None
                 and org["case_dice"][c].get(label) is not None]
        pooled += diffs
        if diffs:
            per_seed.append(sum(diffs) / len(diffs))
    if not pooled:
        return None
    nonzero = any(d != 0 for d in pooled)
    return {"mean": sum(pooled) / len(pooled), "seed_std": _std(per_seed), "seeds": len(per_seed), "n": len(pooled),
            "wilcoxon_p": float(wilcoxon(pooled).pvalue) if nonzero and len(pooled) > 5 else None}


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def aggregate(rows: list[dict], speed: dict[str, dict[str, dict]] | None = None) -> list[dict]:
    """One entry per (dataset, config): per label the Dice mean and std over seeds, the mean std over cases,
    FPR, FNR, the paired difference to the dataset's ORG run; parameters, memory, seconds per iteration (from
    `speed`, measure_speed's results per dataset, where it has the configuration; else the runs' median)."""
    speed = speed or {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["config"]), []).append(r)
    for key in groups:
        groups[key].sort(key=lambda r: r["seed"])
    out = []
    for (dataset, config), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], _skip_label(kv[1][0]) != "org",
                                                                          kv[0][1])):
        org_key = next((k for k, g in groups.items() if k[0] == dataset and _skip_label(g[0]) == "org"), None)
        org = groups.get(org_key, [])
        labels = list(runs[0]["per_class"])
        per_label = {}
        for label in labels:
            dice = [r["per_class"][label]["dice"] for r in runs]
            per_label[label] = {
                "name": runs[0]["label_names"].get(label, label), "dice_mean": _mean(dice), "dice_seed_std": _std(dice),
                "dice_case_std": _mean([r["per_class"][label]["dice_std"] for r in runs]),
                "fpr": _mean([r["per_class"][label]["fpr"] for r in runs]),
                "fnr": _mean([r["per_class"][label]["fnr"] for r in runs]),
                "vs_org": None if (dataset, config) == org_key else paired_to_org(runs, org, label),
            }
        out.append({
            "dataset": dataset, "config": config, "seeds": [r["seed"] for r in runs], "skip": _skip_label(runs[0]),
            "iterations": runs[0]["epochs"] * runs[0]["iterations"], "batch_size": runs[0]["batch_size"],
            "patch": runs[0]["patch"], "parameters": runs[0]["parameters"],
            "train_activation_mb": runs[0]["train_activation_mb"], "inference_peak_mb": runs[0]["inference_peak_mb"],
            "seconds_per_iteration": speed.get(dataset, {}).get(config, {}).get("seconds_per_iteration"),
            "run_seconds_per_iteration": sorted(r["seconds_per_iteration"] for r in runs)[len(runs) // 2],
            "per_label": per_label,
            "curve": _mean_curve(runs),
        })
    return out


def _skip_label(row: dict) -> str:
    from satnet.nets.spec import NetworkSpec

    return NetworkSpec.from_dict(row["network"]).skip_label()


def _mean_curve(runs: list[dict]) -> list[tuple[int, float]]:
    """(iterations, EMA pseudo-Dice averaged over the seeds) per epoch that every seed has."""
    epochs = min(len(r["curve"]) for r in runs)
    points = []
    for e in range(epochs):
        values = [r["curve"][e]["ema_dice"] for r in runs if r["curve"][e]["ema_dice"] is not None]
        if values:
            points.append(((e + 1) * runs[0]["iterations"], _mean(values)))
    return points


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(table: list[dict]) -> list[str]:
    lines = []
    for dataset in dict.fromkeys(t["dataset"] for t in table):
        entries = [t for t in table if t["dataset"] == dataset]
        labels = list(entries[0]["per_label"])
        names = [entries[0]["per_label"][k]["name"] for k in labels]
        lines += [f"### {dataset}: {entries[0]['iterations']:,} iterations at batch {entries[0]['batch_size']}, "
                  f"patch {'x'.join(map(str, entries[0]['patch']))}", ""]
        head = ["configuration", "skip", "seeds"] + [f"Dice {n} (seeds / cases std)" for n in names] \
            + [f"Dice - ORG {n} (seed std, p)" for n in names] + ["FPR / FNR", "parameters", "train act. MB",
                                                                   "infer. peak MB", "s / it (runs' s / it)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in entries:
            cells = [f"`{t['config']}`", t["skip"], str(len(t["seeds"]))]
            for k in labels:
                p = t["per_label"][k]
                cells.append(f"{_fmt(p['dice_mean'])} +- {_fmt(p['dice_seed_std'])} / {_fmt(p['dice_case_std'])}")
            for k in labels:
                v = t["per_label"][k]["vs_org"]
                cells.append("" if v is None else f"{v['mean']:+.3f} ({_fmt(v['seed_std'])}, "
                             f"{'n/a' if v['wilcoxon_p'] is None else format(v['wilcoxon_p'], '.2g')})")
            cells.append(" ; ".join(f"{_fmt(t['per_label'][k]['fpr'])} / {_fmt(t['per_label'][k]['fnr'])}"
                                    for k in labels))
            cells += [f"{t['parameters']:,}", f"{t['train_activation_mb']:,.0f}", f"{t['inference_peak_mb']:.1f}",
                      f"{_fmt(t['seconds_per_iteration'], 2)} ({t['run_seconds_per_iteration']:.2f})"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


TOLERANCE = -0.005  # the bar: a variant may cost at most 0.005 mean paired Dice against ORG
SEEDS = 3  # a row is a result once it has this many seeds


def choose_default(table: list[dict], datasets: tuple[str, ...] = ("hip", "isic")) -> str:
    """The default skip the study supports, in one sentence (issue 15, item 5).

    A variant qualifies when it has runs on every dataset in `datasets` and its paired Dice difference to ORG,
    averaged over the labels, is >= TOLERANCE on each. The lightest qualifying variant (least training
    activation memory, summed over the datasets) wins. If none qualifies, the variant that loses the least Dice
    per MB of training activations saved (mean over the datasets) is named, with the trade stated.
    """
    by_skip: dict[str, dict[str, dict]] = {}
    for t in table:
        by_skip.setdefault(t["skip"], {})[t["dataset"]] = t
    org = by_skip.get("org", {})
    if not all(d in org for d in datasets):
        return f"no decision: ORG has no runs on {', '.join(d for d in datasets if d not in org)}"
    scored = []
    for skip, entries in by_skip.items():
        if skip == "org" or not all(d in entries for d in datasets):
            continue
        diffs, saved = [], []
        for d in datasets:
            vs = [p["vs_org"]["mean"] for p in entries[d]["per_label"].values() if p["vs_org"]]
            if not vs:
                break
            diffs.append(_mean(vs))
            saved.append(org[d]["train_activation_mb"] - entries[d]["train_activation_mb"])
        else:
            scored.append((skip, diffs, saved))
    if not scored:
        return "no decision: no variant other than ORG has runs on every dataset"
    fewest = min(len(t["seeds"]) for t in table if t["dataset"] in datasets)
    provisional = f"provisional ({fewest} of {SEEDS} seeds on some row): " if fewest < SEEDS else ""
    passing = [s for s in scored if all(d >= TOLERANCE for d in s[1])]
    words = lambda s: ", ".join(f"{d} {x:+.3f} Dice, {m:,.0f} MB saved" for d, x, m in zip(datasets, s[1], s[2]))
    if passing:
        skip, diffs, saved = max(passing, key=lambda s: sum(s[2]))
        return (f"{provisional}default `{skip}`: the lightest variant within {TOLERANCE} Dice of ORG on every dataset "
                f"({words((skip, diffs, saved))})")
    costs = [(s, _mean([-d / m if m > 0 else float("inf") for d, m in zip(s[1], s[2])])) for s in scored]
    best, cost = min(costs, key=lambda c: c[1])
    return (f"{provisional}no variant is within {TOLERANCE} Dice of ORG on every dataset; the least Dice per MB saved is "
            f"`{best[0]}` ({words(best)}; {cost * 1000:.3f} Dice per GB)")


def plot_curves(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(t["dataset"] for t in table))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for t in (t for t in table if t["dataset"] == dataset):
            xs, ys = zip(*t["curve"]) if t["curve"] else ((), ())
            ax.plot(xs, ys, label=f"{t['skip']} ({len(t['seeds'])} seed{'s' if len(t['seeds']) != 1 else ''})",
                    linestyle="-" if t["skip"] == "org" else "--" if "-" in t["skip"] else ":")
        ax.set_title(f"{dataset}: validation pseudo-Dice (EMA), mean over seeds")
        ax.set_xlabel("training iterations")
        ax.set_ylabel("pseudo-Dice")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = __import__("io").BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    tmp = path.with_suffix(".tmp.png")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def write_table(rows: list[dict], name: str) -> list[dict]:
    """benchmarks/results/<name>.json, docs/results_<name>.md (between markers) and docs/<name>_curves.png."""
    table = aggregate(rows, load_speed())
    (ROOT / "benchmarks" / "results" / f"{name}.json").write_text(json.dumps(table, indent=1) + "\n")
    plot_curves(table, ROOT / "docs" / f"{name}_curves.png")
    doc = ROOT / "docs" / f"results_{name}.md"
    body = "\n".join([f"<!-- {name} table: generated by `python benchmarks/study.py table --name {name}` -->", "",
                      *markdown(table), f"![curves]({name}_curves.png)", f"<!-- /{name} table -->"])
    text = doc.read_text() if doc.is_file() else f"# {name}\n\n<!-- {name} table --><!-- /{name} table -->\n"
    start, end = text.index(f"<!-- {name} table"), text.index(f"<!-- /{name} table -->") + len(f"<!-- /{name} table -->")
    doc.write_text(text[:start] + body + text[end:])
    return table
