"""The machinery behind satnet's on-disk JSON contracts, and atomic file writes.

Each contract (network spec, fingerprint, plans, case properties, ...) is a dataclass that
inherits `Contract`. `to_dict` gives plain JSON types; `from_dict` rebuilds the dataclass and
rejects what a hand edit could get wrong: an unknown key (naming the closest valid one), a
missing required key, a `format_version` this code cannot read. Nested contracts, lists of
them and dicts of them are rebuilt from the type hints.

Writes go to a temporary file in the same folder, are flushed to disk and then renamed over
the target, so a killed process leaves either the old file or the new one, never half of one.

This module sits on the lowest floor beside `errors.py`: it imports nothing else from satnet.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import glob
import json
import os
import shutil
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from satnet.errors import ConfigError, did_you_mean

T = TypeVar("T", bound="Contract")


def _plain(value: Any) -> Any:
    """Convert dataclasses, tuples and numpy scalars to plain JSON types, keeping key order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()  # numpy scalar
    return value


def _contract_type(tp: Any) -> tuple[str, type | None]:
    """Classify a type hint: ('one'|'list'|'dict', ContractClass) or ('plain', None)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, Contract):
        return "one", tp
    if origin in (list, tuple) and args and isinstance(args[0], type) and issubclass(args[0], Contract):
        return "list", args[0]
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], Contract):
        return "dict", args[1]
    if origin is typing.Union or str(origin) == "types.UnionType":
        for a in args:
            kind, cls = _contract_type(a)
            if cls is not None:
                return kind, cls
    return "plain", None


class Contract:
    """Mixin for dataclasses stored as JSON. Subclasses may set FORMAT_VERSION.

    When a subclass has a `format_version` field, `from_dict` refuses versions newer than
    FORMAT_VERSION (written by a newer satnet) with a message that says so.
    """

    FORMAT_VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls: type[T], data: Any, source: str = "") -> T:
        """Build from a dict; `source` (a file name and key path) is used in error messages."""
        where = source or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object for {cls.__name__}, not {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = [k for k in data if k not in fields]
        if unknown:
            k = unknown[0]
            raise ConfigError(
                f'{where}: unknown key "{k}"{did_you_mean(k, fields)}; valid keys: {", ".join(fields)}'
            )
        missing = [
            n for n, f in fields.items()
            if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
        if "format_version" in data and "format_version" in fields:
            version = data["format_version"]
            if not isinstance(version, int) or version < 1 or version > cls.FORMAT_VERSION:
                raise ConfigError(
                    f"{where}: format_version {version!r} is not supported by this satnet "
                    f"(reads versions 1..{cls.FORMAT_VERSION}); rerun the stage that wrote it with this "
                    f"version of satnet, or upgrade satnet"
                )
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kind, sub = _contract_type(hints.get(name))
            key = f"{where}.{name}"
            if sub is None or value is None:
                kwargs[name] = value
            elif kind == "one":
                kwargs[name] = sub.from_dict(value, key)
            elif kind == "list":
                if not isinstance(value, list):
                    raise ConfigError(f"{key}: expected a list, not {type(value).__name__}")
                kwargs[name] = [sub.from_dict(v, f"{key}[{i}]") for i, v in enumerate(value)]
            else:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key}: expected an object, not {type(value).__name__}")
                kwargs[name] = {k: sub.from_dict(v, f"{key}.{k}") for k, v in value.items()}
        try:
            return cls(**kwargs)  # type: ignore[call-arg]
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError) and where in str(exc):
                raise
            raise ConfigError(f"{where}: {exc}") from None  # __post_init__'s checks, named by file and key


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text (trailing newline); NaN and inf are refused.

    Objects, and lists that hold objects, are indented by two spaces per level; a list without
    objects inside (a shape, a spacing, a kernel size list, a case's class locations) is written
    on one line. That keeps a file readable where it has structure and makes number tables
    short: json's indented encoder is pure Python and put every number on its own line (a 2D
    ISIC case's properties were 50,000 lines and took 0.25 s to write).
    """
    return _encode(obj, 0) + "\n"


def _encode(value: Any, level: int) -> str:
    """`value` as JSON text at indent `level`; converted with `_plain` only where json cannot take it as it is,
    so a large plain number list (class locations) goes through the C encoder once."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict) and value:
        pad = "  " * (level + 1)
        items = (f"{pad}{json.dumps(str(k))}: {_encode(v, level + 1)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"
    try:
        line = json.dumps(value, allow_nan=False)  # a scalar, {} or a list: one line, by the C encoder
    except TypeError:  # numpy scalars or dataclasses inside
        value = _plain(value)
        line = json.dumps(value, allow_nan=False)
    if isinstance(value, (list, tuple)) and "{" in line:  # a list holding objects (or a string with a brace)
        pad = "  " * (level + 1)
        return "[\n" + ",\n".join(pad + _encode(v, level + 1) for v in value) + "\n" + "  " * level + "]"
    return line


def atomic_write(path: str | os.PathLike, write: Callable[[typing.BinaryIO], None]) -> Path:
    """Call `write(fileobj)` on a temporary file beside `path`, fsync it, then rename it to `path`.

    A crash at any moment leaves `path` either absent/old or complete; the temporary file
    (hidden, ending in `.tmp`) is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp's 0600 would hide every output from colleagues
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise naming_file(exc, path, tmp)
    return path


def new_file_mode() -> int:
    """The mode open() gives a new file under the current umask (0o666 & ~umask): 0o644 under the usual 022.

    Read from /proc/self/status where Linux has it; elsewhere by setting the umask and restoring it at once.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def naming_file(exc: BaseException, path: str | os.PathLike,
                temporary: str | os.PathLike | None = None) -> BaseException:
    """`exc`, or for an OSError that names no file (a write to a full disk has none) or names the hidden
    `temporary` file or folder the write went through (a rename onto a folder: "Is a directory"), the same
    error naming `path`, so the message says which file could not be written."""
    if isinstance(exc, OSError) and (exc.filename is None or _within(exc.filename, temporary)):
        named = OSError(exc.errno, exc.strerror or str(exc), str(path))  # the errno's subclass, e.g. PermissionError
        named.__cause__ = exc
        return named
    return exc


def _within(filename: object, folder: str | os.PathLike | None) -> bool:
    """Whether `filename` (an OSError's) is `folder` or lies inside it."""
    if folder is None or not isinstance(filename, (str, bytes, os.PathLike)):
        return False
    file, folder = Path(os.fsdecode(filename)), Path(folder)
    return file == folder or folder in file.parents


TEMPORARY_GLOB = ".*.tmp"  # the hidden `.<name>.<random>.tmp` files or folders that atomic writes go through


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is that of an atomic write's temporary (see remove_temporaries)."""
    return fnmatch.fnmatchcase(name, TEMPORARY_GLOB)


def remove_temporaries(folder: str | os.PathLike, names: typing.Iterable[str] | None = None) -> int:
    """Remove what interrupted atomic writes left in `folder`: hidden `.<name>.*.tmp` files or folders.

    names: the target file names whose temporaries to remove (None: every one in the folder).
    Pass names when other processes may be writing other files into the same folder (`satnet
    predict --part`), so only this process's leftovers go. Returns how many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    patterns = [TEMPORARY_GLOB] if names is None else [f".{glob.escape(n)}.*.tmp" for n in names]
    removed = 0
    for pattern in patterns:
        for stray in folder.glob(pattern):
            if stray.is_dir():
                shutil.rmtree(stray, ignore_errors=True)
            else:
                stray.unlink(missing_ok=True)
            removed += 1
    return removed


def check_writable_folder(folder: str | os.PathLike, what: str = "folder", fix: str = "") -> Path:
    """Fail early, creating nothing, unless files can be written into `folder`.

    `folder` must be a writable folder, or else not exist yet below a writable folder (it is
    created by the first write), so a command that fails later leaves no empty folder behind.
    Raises InputError naming `what` and `fix`.
    """
    from satnet.errors import InputError

    folder = Path(folder)
    hint = f"; {fix}" if fix else ""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create {what} {folder}: {existing} is a file, not a folder{hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {folder} is not writable ({existing} does not allow writing){hint}")
    return folder


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` (a Contract, dataclass or plain JSON value) atomically as deterministic JSON."""
    return atomic_write_text(path, dumps_json(obj))


def read_json_or_none(path: str | os.PathLike) -> Any:
    """The content of a JSON file, or None when it is missing or unreadable: for files that satnet wrote itself
    and rebuilds when they are damaged (a stamp, a preprocessed case's properties)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_json(path: str | os.PathLike, what: str = "file", fix: str = "") -> Any:
    """Read a JSON file; a missing or unparsable file raises a SatnetError naming it and the fix."""
    from satnet.errors import InputError, MissingFileError

    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}{hint}")
    try:  # utf-8-sig: a byte-order mark (Windows Notepad saves one) is skipped, as JSON readers should
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc}){hint}") from None
