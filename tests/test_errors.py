"""satnet's exceptions survive pickling: worker processes (satnet.io.pool) send the errors they raise to the
parent pickled, and one that cannot be rebuilt there breaks the whole pool. Before, ImageFileError and
DatasetCheckError could not be (their __init__ takes a path and a reason, not the message), so a corrupt file
under `satnet evaluate -j 2` was reported as "a worker process died ... for lack of memory"."""
from __future__ import annotations

import ast
import importlib
import pickle
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Constructor arguments of the exception classes whose __init__ is not (message); every other class is
# built from one message string.
EXAMPLE_ARGS = {
    "DatasetCheckError": ("/data/raw", ["imagesTr/a_0000.nii.gz: is missing", "labelsTr/b.nii.gz: is empty"]),
    "ImageFileError": ("/data/raw/imagesTr/a_0000.nii.gz", "cannot be read as an image; export it again"),
}


def exception_classes() -> list[type]:
    """Every exception class defined in satnet/ (found in the source, so a new one is not missed)."""
    found = []
    for path in sorted((REPO / "satnet").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
        if not names:
            continue
        module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"))
        found += [cls for cls in (getattr(module, n) for n in names)
                  if isinstance(cls, type) and issubclass(cls, BaseException)]
    return found


def test_exception_classes_are_found():
    names = {cls.__name__ for cls in exception_classes()}
    assert {"SatnetError", "InputError", "DatasetCheckError", "ImageFileError", "Terminated"} <= names


@pytest.mark.parametrize("cls", exception_classes(), ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_exception_survives_pickling(cls):
    error = cls(*EXAMPLE_ARGS.get(cls.__name__, ("what was expected, what was found, and the fix",)))
    error.note = "an attribute set after construction"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)
