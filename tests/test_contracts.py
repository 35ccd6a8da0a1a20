from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from satnet.contracts import Contract, atomic_write_json, atomic_write, dumps_json, read_json
from satnet.errors import ConfigError, InputError, MissingFileError
from satnet.io.geometry import ImageGeometry


@dataclass
class Inner(Contract):
    a: int
    b: list[float] = field(default_factory=list)


@dataclass
class Outer(Contract):
    FORMAT_VERSION = 2
    name: str
    inner: Inner
    many: list[Inner]
    named: dict[str, Inner]
    format_version: int = 2


def make_outer() -> Outer:
    return Outer("x", Inner(1, [0.5]), [Inner(2), Inner(3, [1.0])], {"k": Inner(4)})


def test_round_trip_nested():
    o = make_outer()
    d = json.loads(dumps_json(o))
    assert Outer.from_dict(d) == o


def test_unknown_key_names_closest():
    d = make_outer().to_dict()
    d["inner"]["bb"] = 1
    with pytest.raises(ConfigError, match=r'unknown key "bb" \(did you mean "b"\?\)'):
        Outer.from_dict(d, "plans.json")


def test_missing_key_and_newer_version():
    d = make_outer().to_dict()
    del d["name"]
    with pytest.raises(ConfigError, match="missing required key"):
        Outer.from_dict(d)
    d = make_outer().to_dict()
    d["format_version"] = 3
    with pytest.raises(ConfigError, match="format_version 3"):
        Outer.from_dict(d)


def test_nan_is_refused():
    with pytest.raises(ValueError):
        dumps_json({"x": float("nan")})


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"v": 1})

    def boom(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, boom)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_read_json_errors(tmp_path):
    with pytest.raises(MissingFileError, match="run it"):
        read_json(tmp_path / "nope.json", "plans file", "run it")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_read_json_skips_a_byte_order_mark(tmp_path):
    # a dataset.json saved by Windows Notepad starts with U+FEFF; json.loads refuses it in the text
    (tmp_path / "dataset.json").write_bytes(b"\xef\xbb\xbf" + b'{"labels": {"background": 0}}')
    assert read_json(tmp_path / "dataset.json") == {"labels": {"background": 0}}


def test_geometry_sitk_round_trip_is_exact():
    direction = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    g = ImageGeometry.from_sitk([24, 20, 16], [1.0, 1.5, 3.0], [-1.0, 2.0, 3.0], direction)
    assert g.shape == [16, 20, 24] and g.spacing == [3.0, 1.5, 1.0] and g.origin == [3.0, 2.0, -1.0]
    size, spacing, origin, d = g.to_sitk()
    assert size == [24, 20, 16] and spacing == [1.0, 1.5, 3.0] and origin == [-1.0, 2.0, 3.0] and d == direction
    assert ImageGeometry.from_dict(g.to_dict()) == g
