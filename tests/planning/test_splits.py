from __future__ import annotations

import json

import pytest
from sklearn.model_selection import KFold

from satnet.errors import ConfigError, InputError, MissingFileError
from satnet.planning.splits import Splits, fold_cases, load_splits, make_splits, save_splits

CASES = [f"case_{i:03d}" for i in range(12)]


def test_folds_are_kfold_over_sorted_ids_and_partition_the_cases():
    splits = make_splits(reversed(CASES), num_folds=5, seed=12345)
    expected = list(KFold(n_splits=5, shuffle=True, random_state=12345).split(CASES))
    assert [f.val for f in splits.folds] == [[CASES[i] for i in val] for _, val in expected]
    assert sorted(c for f in splits.folds for c in f.val) == CASES
    for fold in splits.folds:
        assert sorted(fold.train + fold.val) == CASES
    assert make_splits(CASES, seed=12345) == splits  # input order does not matter
    assert make_splits(CASES, seed=1) != splits


def test_save_load_round_trip(tmp_path):
    splits = make_splits(CASES)
    path = save_splits(splits, tmp_path)
    assert path == tmp_path / "splits.json"
    assert load_splits(tmp_path) == splits
    assert json.loads(path.read_text())["folds"][0].keys() == {"train", "val"}


def test_missing_or_invalid_file_names_it_and_the_fix(tmp_path):
    with pytest.raises(MissingFileError, match=r"splits\.json.*plan-and-preprocess"):
        load_splits(tmp_path)
    data = make_splits(CASES).to_dict()
    data["folds"][0]["val"].append(data["folds"][0]["train"][0])  # a case in both lists
    (tmp_path / "splits.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"in both train and val(.|\n)*splits\.json"):
        load_splits(tmp_path)
    data = make_splits(CASES).to_dict()
    data["fold"] = data.pop("folds")
    (tmp_path / "splits.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match='unknown key "fold" \\(did you mean "folds"\\?\\)'):
        load_splits(tmp_path)


def test_fold_cases():
    splits = make_splits(CASES)
    assert fold_cases(splits, 3) == fold_cases(splits, "3") == splits.folds[3]
    everything = fold_cases(splits, "all")
    assert everything.train == CASES and everything.val == CASES
    for bad in (5, -1, "five", True):
        with pytest.raises(ConfigError, match=r"fold must be 0\.\.4 or 'all'"):
            fold_cases(splits, bad)


def test_fewer_cases_than_folds_falls_back_to_leave_one_out(caplog):
    splits = make_splits(CASES[:3], num_folds=5)
    assert sorted(f.val[0] for f in splits.folds) == CASES[:3]
    assert all(len(f.val) == 1 for f in splits.folds)
    assert "leave-one-out" in caplog.text
    with pytest.raises(ConfigError, match="0..2 or 'all'"):
        fold_cases(splits, 3)
    with pytest.raises(InputError, match="at least 2 cases, found 1"):
        make_splits(CASES[:1])


def test_validation_must_cover_each_case_once():
    fold = make_splits(CASES[:2]).folds[0]
    with pytest.raises(ConfigError, match="exactly one fold"):
        Splits(seed=0, folds=[fold, fold])  # the same case validated twice, the other never
