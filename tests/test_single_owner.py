"""Each shared fact has one owner: the work-folder layout is named only in satnet/io/workdir.py, and each
list of names only in satnet/names.py (issue 17). Re-typing one elsewhere in satnet/ fails here, naming
the file, the line and the owner to import from instead."""
from __future__ import annotations

import ast
from pathlib import Path

import satnet.io.workdir as workdir
import satnet.names as names

PACKAGE = Path(names.__file__).resolve().parent
WORKDIR_FILE = Path(workdir.__file__).resolve()
NAMES_FILE = Path(names.__file__).resolve()

# Every file and folder name of the work-folder layout (the module's *_FILE and *_FOLDER constants).
LAYOUT_NAMES = {value: key for key, value in vars(workdir).items()
                if key.endswith(("_FILE", "_FOLDER")) and isinstance(value, str)}
# Every list of names: the tuples of strings satnet.names defines.
NAME_LISTS = {frozenset(value): key for key, value in vars(names).items()
              if isinstance(value, tuple) and len(value) > 1 and all(isinstance(v, str) for v in value)}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"), str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def _is_path_join(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div)


def _retyped_layout_names(path: Path, tree: ast.Module) -> list[str]:
    """String constants that spell a layout name: a distinctive one ("plans.json", "gt_segmentations") anywhere,
    a plain word ("results", "validation") where it joins a path or is assigned to a name (RESULTS = "results");
    and f"fold_{k}" or f"checkpoint_{w}.pt"."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in LAYOUT_NAMES and not isinstance(parents.get(node), ast.JoinedStr):
            distinctive = "." in node.value or "_" in node.value
            if distinctive or _is_path_join(node, parents) or isinstance(parents.get(node), ast.Assign):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r} "
                             f"(use satnet.io.workdir.{LAYOUT_NAMES[node.value]} or WorkDir)")
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            if "".join(parts) in ("fold_{}", "checkpoint_{}.pt"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: f\"{''.join(parts)}\" "
                             f"(use satnet.io.workdir.fold_folder / checkpoint_name or WorkDir)")
    return found


def _retyped_name_lists(path: Path, tree: ast.Module) -> list[str]:
    """Tuples, lists, sets and call arguments (`choice("final", "best")`) holding exactly the names of a list."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Call):
            items = node.args
        else:
            continue
        strings = [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if len(strings) > 1 and len(strings) == len(items) and frozenset(strings) in NAME_LISTS:
            owner = NAME_LISTS[frozenset(strings)]
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {tuple(strings)} (use satnet.names.{owner})")
    return found


def test_the_work_folder_layout_is_named_only_in_workdir():
    retyped = [hit for path, tree in _modules() if path.resolve() != WORKDIR_FILE
               for hit in _retyped_layout_names(path, tree)]
    assert not retyped, "work-folder names typed outside satnet/io/workdir.py:\n" + "\n".join(retyped)


def test_each_name_list_is_defined_only_in_names():
    retyped = [hit for path, tree in _modules() if path.resolve() != NAMES_FILE for hit in _retyped_name_lists(path, tree)]
    assert not retyped, "name lists typed outside satnet/names.py:\n" + "\n".join(retyped)


def test_the_checks_see_a_retyped_name():
    """The scanners themselves: each finds what it is meant to find (so the tests above cannot pass vacuously)."""
    code = ('x = Path(w) / "results" / f"fold_{k}"\ny = Path(w) / "gt_segmentations"\n'
            'p.add_argument("--c", type=choice("final", "best"))\nDEVICES = ("auto", "cpu", "cuda")\n'
            'run(desc="validation")\nRESULTS = "results"\n')
    tree = ast.parse(code)
    layout = _retyped_layout_names(PACKAGE / "example.py", tree)
    assert sorted(hit.split(": ")[1].split(" ")[0] for hit in layout) == ["'gt_segmentations'", "'results'", "'results'", 'f"fold_{}"']
    lists = _retyped_name_lists(PACKAGE / "example.py", tree)
    assert sorted(hit.split("(use ")[1] for hit in lists) == ["satnet.names.DEVICES)", "satnet.names.PREDICT_CHECKPOINTS)"]
    assert {"ARCH_NAMES", "SKIP_MODES", "GATE_INITS", "PRECISIONS", "PREDICT_PRECISIONS", "DEVICES",
            "OPTIMIZERS"} <= set(NAME_LISTS.values())
    assert {"PLANS_FILE", "GT_FOLDER", "POSTPROCESSING_FILE", "RESULTS_FOLDER", "VALIDATION_FOLDER"} <= set(
        LAYOUT_NAMES.values())
