"""Argument types of the `satnet` command (each error says what was expected and what was given)
and the registry of subcommands, which each subcommand module fills when imported."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from satnet.errors import did_you_mean
from satnet.names import MAX_SEED


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def seed_arg(text: str) -> int:
    """A random seed: an integer 0 .. MAX_SEED (torch.manual_seed takes 64 bits)."""
    value = nonnegative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer 0 .. 2**64 - 1 ({MAX_SEED}), not {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], not {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], not {text!r}")
    return value


def _number(text: str, ok: Callable[[float], bool], expected: str) -> float:
    """float(text) when ok(value), else an ArgumentTypeError 'must be <expected>, not <text>'."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, not {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    return _number(text, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    return _number(text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def choice(*options: str) -> Callable[[str], str]:
    """An argparse type accepting one of `options`, with a 'did you mean' for near misses."""

    def parse(text: str) -> str:
        if text not in options:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(options)}, not {text!r}{did_you_mean(text, options)}"
            )
        return text

    parse.__name__ = "choice"
    return parse


def one_of(names: Sequence[str]) -> dict[str, Any]:
    """`type` and `metavar` of an argument taking one of `names` (a list of satnet.names):
    `p.add_argument("--skip", **one_of(SKIP_MODES), ...)` shows {org,st,at,sat} and checks with a did-you-mean."""
    return {"type": choice(*names), "metavar": "{" + ",".join(names) + "}"}


def checkpoint_argument(p: argparse.ArgumentParser, unset: bool = False) -> None:
    """--checkpoint: which checkpoint of each trained fold to load (predict, export, visualize). unset: the
    value is None when the flag is not given (predict refuses the flag for an exported folder), else the default."""
    from satnet.names import DEFAULT_CHECKPOINT, PREDICT_CHECKPOINTS

    p.add_argument("--checkpoint", **one_of(PREDICT_CHECKPOINTS), default=None if unset else DEFAULT_CHECKPOINT,
                   help=f"which checkpoint of each fold: checkpoint_<name>.pt (default {DEFAULT_CHECKPOINT})")


class Distinct(argparse.Action):
    """A list flag (nargs="+") whose values must differ; argparse's error naming the flag otherwise. A value given
    twice was taken twice: `-f 0 0` loaded fold 0 twice, `--configs 3d 3d` planned 3d for 2D images."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise argparse.ArgumentError(
                self, f"{twice} is given more than once ({' '.join(map(str, values))}); give each value once")
        setattr(namespace, self.dest, values)


def fold_arg(text: str) -> str:
    """A fold: an integer >= 0 or "all"."""
    if text == "all" or (text.isdigit() and str(int(text)) == text):
        return text
    raise argparse.ArgumentTypeError(f"must be a fold number (0, 1, ...) or 'all', not {text!r}")


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        why = "a file: give the folder that holds it" if path.exists() else "no such folder"
        raise argparse.ArgumentTypeError(f"must be an existing folder, not {text!r} ({why})")
    return path


def default_work_dir(raw_dir: Path) -> Path:
    """`$SATNET_WORK/<dataset folder>` when SATNET_WORK is set, else `./satnet_work/<dataset folder>`."""
    root = os.environ.get("SATNET_WORK") or "satnet_work"
    return Path(root) / Path(raw_dir).resolve().name


# Each entry adds one subparser and sets `handler` (satnet.cli.prepare, train, predict, tools).
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], argparse.ArgumentParser]] = []


def subcommand(add: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]):
    SUBCOMMANDS.append(add)
    return add
