"""The `satnet` command: one argparse parser with a subcommand per stage.

Heavy modules (torch, SimpleITK) are imported inside each handler, so `satnet --help` is fast.
Errors a user can fix (`SatnetError`, and OS errors such as a full disk or a folder without
write permission) are printed as one clear message without a traceback and give exit code 1;
`--debug` shows the traceback (it, `-v` and `-q` may come before or after the subcommand). Bad
flag values are rejected by argparse (exit code 2) with a message that names the flag, the valid
range and the value given.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Callable, Sequence

from satnet import __version__
# Importing a subcommand module registers its subcommands; --help lists them in this order.
from satnet.cli import prepare  # noqa: F401  isort: skip
from satnet.cli import train  # noqa: F401  isort: skip
from satnet.cli import predict  # noqa: F401  isort: skip
from satnet.cli import tools  # noqa: F401  isort: skip
from satnet.cli.args import SUBCOMMANDS
from satnet.errors import SatnetError, did_you_mean

log = logging.getLogger("satnet")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose unknown-subcommand error suggests the closest name."""

    def error(self, message: str):  # type: ignore[override]
        import re

        m = re.search(r"argument COMMAND: invalid choice: '([^']*)'", message)
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if m and sub is not None:
            message += did_you_mean(m.group(1), sub.choices)
        super().error(message)


COMMON_FLAGS = ("debug", "verbose", "quiet")


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser whose errors add, when a list flag (--spacing, --configs, -f, -l, -c) took a
    positional argument, which flag swallowed it: `plan --spacing 2 RAW` said RAW_DATASET_DIR was missing."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # type: ignore[override]
        import re

        lists = {o for a in self._actions if a.nargs == "+" for o in a.option_strings}
        used = [w for w in getattr(self, "_given", []) if w in lists]
        value = re.search(r"not '([^']*)'$", message)
        swallowed = "the following arguments are required" in message or (
            value is not None and os.path.exists(value.group(1)))
        if used and swallowed:
            message += (f" ({used[-1]} takes every word after it up to the next flag: give the positional arguments "
                        f"before it, or end its values with --)")
        super().error(message)


def _common(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--debug, -v, -q on a subcommand's parser, and (prefix "before_") on satnet's own, so that both
    `satnet plan -v ...` and `satnet -v plan ...` work (`_merge_common` joins them)."""
    parser.add_argument("--debug", action="store_true", dest=f"{prefix}debug", help="show full tracebacks for errors")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", dest=f"{prefix}verbose", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", dest=f"{prefix}quiet",
                           help="log warnings and errors only")


def _merge_common(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The common flags given before or after the subcommand, as one; -v with -q is argparse's error."""
    for name in COMMON_FLAGS:
        setattr(args, name, getattr(args, name) or getattr(args, f"before_{name}"))
        delattr(args, f"before_{name}")
    if args.verbose and args.quiet:
        parser.error("argument -q/--quiet: not allowed with argument -v/--verbose")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="satnet",
        description="Self-configuring medical image segmentation with SAT skip connections.",
    )
    parser.add_argument("--version", action="version", version=f"satnet {__version__}")
    _common(parser, prefix="before_")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubcommandParser)
    sub.required = True
    for add in SUBCOMMANDS:
        p = add(sub)
        _common(p)
    return parser


def _configure_logging(args: argparse.Namespace) -> Callable[[], None]:
    """Send satnet's log records to stderr as plain lines; returns a function restoring the previous set-up
    (so calling main() from Python, as the tests do, leaves logging as it found it)."""
    saved = (list(log.handlers), log.level, log.propagate)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False

    def restore() -> None:
        log.handlers[:] = saved[0]
        log.setLevel(saved[1])
        log.propagate = saved[2]

    return restore


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every `finally` runs: worker processes are stopped and
    no output is left half-written (the default action would end the process on the spot, orphaning them)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _terminated_within(exc: BaseException) -> Terminated | None:
    """The Terminated that `exc` was raised from, if any: a SIGTERM that lands inside a C extension's import
    (matplotlib's, say) or a library that wraps exceptions surfaces as another exception caused by it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Terminated):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _handle_sigterm() -> Callable[[], None]:
    """Install the SIGTERM handler (main thread only); returns a function restoring the previous one."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _merge_common(parser, parser.parse_args(argv))
    restore_logging = _configure_logging(args)
    restore_sigterm = _handle_sigterm()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt as exc:
        return _stopped(args.command, isinstance(exc, Terminated))
    except Exception as exc:
        if _terminated_within(exc) is not None:
            return _stopped(args.command, True)
        if args.debug or not isinstance(exc, (SatnetError, OSError)):
            raise
        print(f"satnet {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 1
    finally:
        restore_sigterm()
        restore_logging()


def _message(exc: SatnetError | OSError) -> str:
    if isinstance(exc, SatnetError):
        return str(exc)
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return (f"{exc.strerror or exc}{where}; check that the path exists, is writable and the disk has space, then "
            f"rerun (finished outputs are kept)")


def _stopped(command: str, terminated: bool) -> int:
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    print(f"satnet {command}: {how}; finished outputs are kept, rerun to continue (train: --resume)", file=sys.stderr)
    return 143 if terminated else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
