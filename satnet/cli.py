"""The `satnet` command: one argparse parser with a subcommand per stage.

Heavy modules (torch, SimpleITK) are imported inside each handler, so `satnet --help` is fast.
Errors a user can fix (`SatnetError`, and OS errors such as a full disk or a folder without
write permission) are printed as one clear message without a traceback and give exit code 1;
`--debug` shows the traceback. Bad flag values are rejected by argparse (exit code 2) with a
message that names the flag, the valid range and the value given.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from satnet import __version__
from satnet.errors import SatnetError, did_you_mean

log = logging.getLogger("satnet")


# ---------------------------------------------------------------------------------------------
# Argument types: each says what was expected and what was given.


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
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


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"must be an existing folder, not {text!r} (no such folder)")
    return path


def default_work_dir(raw_dir: Path) -> Path:
    """`$SATNET_WORK/<dataset folder>` when SATNET_WORK is set, else `./satnet_work/<dataset folder>`."""
    root = os.environ.get("SATNET_WORK") or "satnet_work"
    return Path(root) / Path(raw_dir).resolve().name


# ---------------------------------------------------------------------------------------------
# The parser.


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose unknown-subcommand error suggests the closest name."""

    def error(self, message: str):  # type: ignore[override]
        import re

        m = re.search(r"argument COMMAND: invalid choice: '([^']*)'", message)
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if m and sub is not None:
            message += did_you_mean(m.group(1), sub.choices)
        super().error(message)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="satnet",
        description="Self-configuring medical image segmentation with SAT skip connections.",
    )
    parser.add_argument("--version", action="version", version=f"satnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=argparse.ArgumentParser)
    sub.required = True
    for add in _SUBCOMMANDS:
        p = add(sub)
        _common(p)
    return parser


# Each entry adds one subparser and sets `handler`; see the sections below.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], argparse.ArgumentParser]] = []


def subcommand(add: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]):
    _SUBCOMMANDS.append(add)
    return add


# ---------------------------------------------------------------------------------------------
# main


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.handler(args) or 0)
    except SatnetError as exc:
        if args.debug:
            raise
        print(f"satnet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"satnet {args.command}: error: {exc.strerror or exc}{where}; check that the path exists, "
              f"is writable and the disk has space, then rerun (finished outputs are kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"satnet {args.command}: interrupted; finished outputs are kept, rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
