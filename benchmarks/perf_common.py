"""What the side-by-side benchmarks against nnU-Net share: the machine record, results files, docs tables.

- `machine()`: the fields every result starts with (date, CPU, cores, torch, threads, load average).
- `save_results(name, record)`: benchmarks/results/<name>_<timestamp>.json (no `_latest` copy: the doc
  section names the file it shows).
- `publish(name, record, text)`: prints the table, then save_results and write_doc_section, the section
  ending with `results_line` (the results file's name).
- `write_doc_section(name, markdown)`: replaces the section between `<!-- name -->` and
  `<!-- /name -->` in docs/performance.md (appended when absent), so each benchmark rewrites only
  its own table.
- `import_peers()`: the nnU-Net runners of benchmarks/peers (nnunet_runs, nnunet_env, measure).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "performance.md"
PEERS = REPO / "benchmarks" / "peers"


def import_peers():
    """The modules of benchmarks/peers, importable by name afterwards (nnunet_runs, nnunet_env, measure)."""
    if str(PEERS) not in sys.path:
        sys.path.insert(0, str(PEERS))
    import nnunet_runs

    return nnunet_runs


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The vector extensions that matter for oneDNN: AVX512, its BF16 instructions, AMX."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(name for name, flag in (("AVX512", "avx512f"), ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile"))
                     if flag in flags) or "no AVX512"


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    """Date, CPU, cores, ISA, torch version and threads, load average now."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpu": cpu_model(), "isa": cpu_isa(),
            "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "load_avg_1min": load_average(),
            "command": "python " + " ".join([_script_path(), *map(repo_relative, sys.argv[1:])])}


def repo_relative(arg: str) -> str:
    """An absolute path as a path relative to the repository (docs hold no machine's absolute paths)."""
    return os.path.relpath(arg, REPO) if os.path.isabs(arg) else arg


def _script_path() -> str:
    script = Path(sys.argv[0]).resolve()
    return script.relative_to(REPO).as_posix() if script.is_relative_to(REPO) else sys.argv[0]


def save_results(name: str, record: dict) -> Path:
    """Write `record` to benchmarks/results/<name>_<YYYYmmdd-HHMMSS>.json and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def results_line(path: Path) -> str:
    """The line under a doc section that names the results file it was made from."""
    return f"Results: benchmarks/results/{path.name}."


def write_doc_section(name: str, markdown: str) -> None:
    """Replace (or append) the `<!-- name -->` ... `<!-- /name -->` section of docs/performance.md."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = DOC.read_text() if DOC.is_file() else "# Performance on the CPU\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def publish(name: str, record: dict, text: str, write: bool = True) -> None:
    """Print `text`; unless `write` is False, also save `record` (save_results) and put `text` into the
    `<!-- bench_<name> -->` section of docs/performance.md."""
    print(text)
    if write:
        path = save_results(name, record)
        print("results:", path)
        write_doc_section(f"bench_{name}", text.rstrip() + "\n\n" + results_line(path))


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def machine_line(record: dict) -> str:
    m = record["machine"]
    loads = record.get("load_avg_range")
    load = f"load average {loads[0]:.1f}-{loads[1]:.1f} during the run" if loads else f"load average {m['load_avg_1min']}"
    return (f"{m['date']}; {m['cpu']} ({m['isa']}), {m['cores']} cores, torch {m['torch']}, "
            f"{m['torch_threads']} torch threads; {load}. Command: `{m['command']}`")
