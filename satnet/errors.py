"""Errors a user can trigger, and the helpers that word them.

Every error a user can cause (bad data, a bad flag, a missing stage output) is raised as a
`SatnetError` subclass with a message that says what was expected, what was found, which
file or case, and the fix when one is known. The CLI prints the message without a traceback
(unless `--debug`) and exits non-zero. Programming errors stay ordinary exceptions.

The subclasses also subclass the matching builtin (`ValueError`, `FileNotFoundError`), so
library users can catch either.
"""
from __future__ import annotations

import difflib
import shlex
from typing import Iterable


class SatnetError(Exception):
    """Base class of every error satnet raises for something the user can fix.

    Worker processes send errors to the parent pickled. An error is rebuilt from its `args` (the
    message) and its attributes without calling its __init__ again: Python's default calls the class
    with `args`, which an __init__ taking other parameters (DatasetCheckError, ImageFileError)
    refuses, and the whole pool broke instead of reporting the error.
    """

    def __reduce__(self):
        return _rebuild_error, (type(self), self.args), self.__dict__


def _rebuild_error(cls: type[SatnetError], args: tuple) -> SatnetError:
    """An error of class `cls` holding `args`, made without its __init__ (see SatnetError); pickle then restores
    its attributes."""
    return cls.__new__(cls, *args)


class InputError(SatnetError, ValueError):
    """Input data (an image, a label, dataset.json, a flag value) is not what satnet expects."""


class ConfigError(SatnetError, ValueError):
    """A plans file, a network spec or an option combination is invalid."""


class MissingFileError(SatnetError, FileNotFoundError):
    """A file or folder that a stage needs does not exist."""


class DatasetCheckError(InputError):
    """A dataset failed its checks; `problems` lists every problem found, one line each."""

    def __init__(self, dataset_dir: str, problems: list[str]):
        self.dataset_dir = str(dataset_dir)
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"dataset {self.dataset_dir} failed {n} check{'s' if n != 1 else ''}; nothing was written:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def command(*parts: object) -> str:
    """A command line for a hint, each part shell-quoted: `satnet train '/data/my work' 3d 0` pastes into a
    shell even when a path has spaces. Placeholders (WORK_DIR, INPUT_DIR) are left as they are."""
    return shlex.join(str(p) for p in parts)


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest option to `name`, or '' when none is close."""
    options = [str(o) for o in options]
    same_but_case = [o for o in options if o.lower() == str(name).lower()]  # "3D" for "3d": difflib scores it 0.5
    close = same_but_case or difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_name_error(what: str, name: str, options: Iterable[str], cls: type = ConfigError) -> SatnetError:
    """Build the error for an unknown choice: 'unknown skip "sta" (did you mean "st"?); valid: ...'."""
    options = sorted(str(o) for o in options)
    return cls(f'unknown {what} "{name}"{did_you_mean(name, options)}; valid {what} names: {", ".join(options)}')
