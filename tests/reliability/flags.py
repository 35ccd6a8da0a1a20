"""Out-of-range values for every typed flag of every subcommand, found by walking satnet's parser.

`flag_cases()` lists, for each argument whose value argparse checks (a `type` such as
positive_int or a choice, and --spacing, which its handler parses), a few values it must
refuse: out of range, not a number, NaN or infinite, a near-miss of a choice. A new flag
whose type has no entry in BAD_VALUES makes `flag_cases` raise, so the suite cannot
silently stop covering the CLI.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from satnet.cli import build_parser

# Type name -> values it must refuse. None of them starts with "-" followed by something argparse
# would take for an option ("-1e-9", "-1/2"): those are refused for the wrong reason.
BAD_VALUES: dict[str, tuple[str, ...]] = {
    "positive_int": ("0", "-3", "2.5", "many"),
    "nonnegative_int": ("-1", "1.5", "x"),
    "seed_arg": ("-1", "1.5", "x", str(2**64)),
    "positive_float": ("0", "-0.5", "nan", "inf", "abc"),
    "nonnegative_float": ("-0.5", "nan", "inf"),
    "unit_interval": ("-0.1", "1.01", "nan"),
    "fraction": ("0", "1.5", "nan"),
    "choice": ("bogus", ""),
    "fold_arg": ("-1", "1.0", "five"),
    "part_arg": ("2/2", "3/2", "1", "a/b"),
    "existing_dir": ("no/such/folder",),
    "skip_levels_arg": ("sat:0", "org:2", "sat,,org", "bogus", "sat:x", ""),
}
SPACING_BAD = ("0", "-2", "1 2", "nan", "big")  # --spacing: nargs="+", parsed by its handler (parser.error)
UNCHECKED_TYPES = ("Path",)  # any text is a valid path; whether it can be written is checked when writing

# The smallest argv reaching each subcommand's handler, positionals first; {dir} is an existing folder.
PREFIX: dict[str, list[str]] = {
    "plan-and-preprocess": ["{dir}"], "plan": ["{dir}"], "preprocess": ["{dir}"],
    "train": ["{dir}", "3d", "0"],
    "predict": ["-i", "{dir}", "-o", "{dir}/out", "-m", "{dir}"],
    "evaluate": ["{dir}", "{dir}"], "find-best": ["{dir}"],
    "export": ["-m", "{dir}", "-c", "3d", "-o", "{dir}/out"],
    "visualize": ["-m", "{dir}", "-c", "3d", "-f", "0", "-i", "{dir}/scan_0000.nii.gz", "-o", "{dir}/out"],
    "demo": [],
}


@dataclass(frozen=True)
class FlagCase:
    subcommand: str
    flag: str  # how argparse names the argument in its message: "-j/--workers", "FOLD"
    value: str

    @property
    def id(self) -> str:
        return f"{self.subcommand} {self.flag.split('/')[-1]}={self.value!r}"

    def argv(self, folder: Path) -> list[str]:
        """The subcommand's prefix with this argument set to the bad value (positionals replaced in place)."""
        words = [w.replace("{dir}", str(folder)) for w in PREFIX[self.subcommand]]
        values = self.value.split(" ") if self.flag == "--spacing" else [self.value]
        if self.flag.startswith("-"):
            return [self.subcommand, *words, self.flag.split("/")[-1], *values]
        words[_positionals(self.subcommand).index(self.flag)] = self.value  # PREFIX lists positionals first
        return [self.subcommand, *words]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _display(action: argparse.Action) -> str:
    return "/".join(action.option_strings) if action.option_strings else (action.metavar or action.dest)


def _positionals(subcommand: str) -> list[str]:
    return [_display(a) for a in _subparsers()[subcommand]._actions if not a.option_strings]


def flag_cases() -> list[FlagCase]:
    """Every (subcommand, typed argument, bad value); raises when an argument's type has no bad values."""
    cases = []
    for name, sub in _subparsers().items():
        if name not in PREFIX:
            raise KeyError(f"subcommand {name!r} has no entry in PREFIX (tests/reliability/flags.py): add one")
        for action in sub._actions:
            flag = _display(action)
            if "--spacing" in action.option_strings:
                cases += [FlagCase(name, flag, v) for v in SPACING_BAD]
                continue
            kind = getattr(action.type, "__name__", None)
            if kind is None or kind in UNCHECKED_TYPES:
                continue
            if kind not in BAD_VALUES:
                raise KeyError(f"{name} {flag}: type {kind!r} has no bad values in BAD_VALUES: add some")
            cases += [FlagCase(name, flag, v) for v in BAD_VALUES[kind]]
    return cases
