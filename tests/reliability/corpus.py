"""The bad-input corpus: one table of cases, each breaking one thing and naming what satnet must say.

Each `BadInput` copies the bases it `uses` into a sandbox (tests/reliability/sandbox.py),
`breaks` one thing there, and runs `command` (the first command that meets the input) through
`satnet.cli.main`. Expected: exit code `code`, stderr holding one "satnet <command>: error:" line
that mentions `names` (the file, case or flag) and `fix` (how to fix it), no traceback, and no
file under the sandbox new, changed or removed. The same table feeds the test
(test_corpus.py) and docs/reliability.md (make_report.py).

Command templates are split on spaces, then each word is formatted with the sandbox's paths:
{raw} (the dataset), {work} (WORK_DIR), {out} (an OUTPUT_DIR), {tests} (raw/imagesTs), {root}.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tests.reliability.breakers import (
    add_second_channel,
    crop_centre,
    edit_json,
    pickled_checkpoint,
    random_bytes,
    read_only_folder,
    rename_case,
    rewrite_nifti,
    rotated_direction,
    set_voxel,
    truncate,
    write_4d,
)
from tests.reliability.sandbox import CliResult, Sandbox, make_sandbox, run_cli


@dataclass(frozen=True)
class BadInput:
    """One row of the corpus: how to build the bad input, the command that meets it, what it must say."""

    name: str
    what: str  # the bad input, in words (the report's first column)
    uses: tuple[str, ...]  # bases copied into the sandbox: raw3d, raw2d, work
    breaks: Callable[[Sandbox], None]
    command: str
    names: str  # the file, case or flag the message must name
    fix: str  # a fragment of the fix the message must give
    code: int = 1

    def argv(self, box: Sandbox) -> list[str]:
        paths = {"raw": box.raw, "work": box.work, "out": box.out, "tests": box.test_images, "root": box.root}
        return [word.format(**paths) for word in self.command.split()]

    def run(self, root: Path, bases: dict[str, Path]) -> tuple[Sandbox, CliResult]:
        """Build the bad input in a sandbox under `root` and run the command (Unavailable: cannot be built here)."""
        box = make_sandbox(root, bases, self.uses)
        self.breaks(box)
        return box, run_cli(self.argv(box), watch=box.root)

    def failures(self, result: CliResult) -> list[str]:
        """What `result` got wrong against this case's expectations (empty: a clear, clean failure)."""
        errors = [line for line in result.stderr.splitlines() if ": error:" in line]
        checks = {
            f"exit code {result.code}, expected {self.code}": result.code == self.code,
            f"{len(errors)} error lines, expected one from satnet {result.argv[0]}":
                len(errors) == 1 and errors[0].startswith(f"satnet {result.argv[0]}: error:"),
            f"the message does not name {self.names!r}": self.names in result.stderr,
            f"the message does not give the fix {self.fix!r}": self.fix in result.stderr,
            "a traceback was printed": "Traceback" not in result.stderr,
            f"files changed: {result.changes}": not result.changes,
        }
        return [what for what, ok in checks.items() if not ok]


PLAN = "plan-and-preprocess {raw} -o {work} --configs 3d -j 1"
PLAN_2D = "plan-and-preprocess {raw} -o {work} -j 1"
TRAIN = "train {work} 3d 0 --epochs 1 --iterations-per-epoch 1 --workers 0 --device cpu --no-validation"
PREDICT = "predict -i {tests} -o {out} -m {work} -c 3d -f 0 --no-tta --threads 1"
IMAGE0, LABEL0 = "imagesTr/case_000_0000.nii.gz", "labelsTr/case_000.nii.gz"


def image(box: Sandbox, case: int = 0, channel: int = 0) -> Path:
    return box.raw / "imagesTr" / f"case_{case:03d}_{channel:04d}.nii.gz"


def label(box: Sandbox, case: int = 0) -> Path:
    return box.raw / "labelsTr" / f"case_{case:03d}.nii.gz"


def checkpoint(box: Sandbox, which: str = "final", config: str = "3d") -> Path:
    return box.fold_dir(config) / f"checkpoint_{which}.pt"


def plans_edit(edit: Callable[[dict], None]) -> Callable[[Sandbox], None]:
    return lambda box: edit_json(box.work / "plans.json", edit)


def dataset_json_edit(edit: Callable[[dict], object]) -> Callable[[Sandbox], None]:
    return lambda box: edit_json(box.raw / "dataset.json", edit)


def _missing_channel(box: Sandbox) -> None:
    add_second_channel(box.raw)
    image(box, 1, 1).unlink()


def _other_config_checkpoint(which: str) -> Callable[[Sandbox], None]:
    return lambda box: shutil.copyfile(checkpoint(box, which, "2d"), checkpoint(box, which, "3d"))


def _link_to_nothing(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def _single_case(box: Sandbox) -> None:
    for path in (image(box, 1), image(box, 2), label(box, 1), label(box, 2)):
        path.unlink()
    edit_json(box.raw / "dataset.json", lambda d: d.update(numTraining=1))


def _work_under_a_file(box: Sandbox) -> None:
    (box.root / "a_file").write_text("not a folder\n")


def _test_images_extra_channel(box: Sandbox) -> None:
    shutil.copyfile(box.test_images / "case_003_0000.nii.gz", box.test_images / "case_003_0001.nii.gz")


def _truncated_prediction(box: Sandbox) -> None:
    shutil.copytree(box.raw / "labelsTr", box.out)
    truncate(box.out / "case_001.nii.gz")


def _truncate_test_images(box: Sandbox) -> None:
    for path in box.test_images.iterdir():
        truncate(path)


CASES: list[BadInput] = [
    # ---- image and label files (plan-and-preprocess meets them first: check_dataset)
    BadInput("truncated_image", "image .nii.gz cut to half its bytes", ("raw3d",),
             lambda b: truncate(image(b)), PLAN, IMAGE0, "copy or export the file again"),
    BadInput("truncated_label", "label .nii.gz cut to half its bytes", ("raw3d",),
             lambda b: truncate(label(b, 1)), PLAN, "labelsTr/case_001.nii.gz", "export it again"),
    BadInput("not_an_image", "a text file named case_000_0000.nii.gz", ("raw3d",),
             lambda b: image(b).write_text("patient notes, not an image\n"), PLAN, IMAGE0, "export it again"),
    BadInput("shape_mismatch", "label one slice shorter than its image", ("raw3d",),
             lambda b: rewrite_nifti(label(b), lambda a: a[:-1]), PLAN, LABEL0, "resample it onto that image"),
    BadInput("spacing_mismatch", "label spacing 3.3 mm where the image has 3 mm", ("raw3d",),
             lambda b: rewrite_nifti(label(b), spacing_factor=(1, 1, 1.1)), PLAN, LABEL0, "CopyInformation(image)"),
    BadInput("spacing_outlier_coarse", "one case at 50 mm slices (Z) among 3 mm ones, image and label", ("raw3d",),
             lambda b: [rewrite_nifti(p, spacing_factor=(1, 1, 50 / 3)) for p in (image(b), label(b))], PLAN, IMAGE0,
             "fix the spacing in the image and label files"),
    BadInput("spacing_outlier_metres", "one case with its spacing in metres (0.003 x 0.001 x 0.001)", ("raw3d",),
             lambda b: [rewrite_nifti(p, spacing_factor=(0.001, 0.001, 0.001)) for p in (image(b), label(b))], PLAN,
             IMAGE0, "metres instead of millimetres"),
    BadInput("direction_mismatch", "label direction rotated by 5 degrees against its image", ("raw3d",),
             lambda b: rewrite_nifti(label(b), direction=rotated_direction(35)), PLAN, LABEL0,
             "CopyInformation(image)"),
    BadInput("origin_mismatch", "label origin shifted by 4 mm", ("raw3d",),
             lambda b: rewrite_nifti(label(b), origin_shift=(0.0, 0.0, 4.0)), PLAN, LABEL0, "CopyInformation(image)"),
    BadInput("missing_channel", "2-channel dataset, case_001_0001.nii.gz missing", ("raw3d",),
             _missing_channel, PLAN, "imagesTr/case_001_0001.nii.gz", "add it or remove case case_001"),
    BadInput("extra_file", "notes.txt in imagesTr", ("raw3d",),
             lambda b: (b.raw / "imagesTr" / "notes.txt").write_text("x\n"), PLAN, "imagesTr/notes.txt",
             "convert it or move it out"),
    BadInput("unparsable_name", "imagesTr/case_000.nii.gz (no _0000 channel suffix)", ("raw3d",),
             lambda b: shutil.copyfile(image(b), image(b).with_name("case_000.nii.gz")), PLAN,
             "imagesTr/case_000.nii.gz", "rename it or move it out"),
    BadInput("label_without_image", "labelsTr/case_009.nii.gz without images", ("raw3d",),
             lambda b: shutil.copyfile(label(b), label(b, 9)), PLAN, "labelsTr/case_009.nii.gz",
             "add the case's images or remove the label"),
    BadInput("missing_label", "labelsTr/case_002.nii.gz deleted", ("raw3d",),
             lambda b: label(b, 2).unlink(), PLAN, "labelsTr/case_002.nii.gz", "move its images to imagesTs"),
    BadInput("undeclared_label_value", "label holds value 3; dataset.json declares 0..2", ("raw3d",),
             lambda b: set_voxel(label(b), 3, np.uint8), PLAN, LABEL0, "declare the values in dataset.json"),
    BadInput("label_value_with_a_gap", "label holds value 5; dataset.json declares 0..2 (3, 4 unused)", ("raw3d",),
             lambda b: set_voxel(label(b), 5, np.uint8), PLAN, LABEL0, "5 cannot be declared"),
    BadInput("negative_label_value", "label holds value -1", ("raw3d",),
             lambda b: set_voxel(label(b), -1, np.int16), PLAN, LABEL0, "-1 cannot be declared"),
    BadInput("float_label", "float label with a voxel of 1.5", ("raw3d",),
             lambda b: set_voxel(label(b), 1.5), PLAN, LABEL0, "nearest-neighbour interpolation"),
    BadInput("nan_voxel", "image with a NaN voxel", ("raw3d",),
             lambda b: set_voxel(image(b), np.nan), PLAN, IMAGE0, "replace them in the file"),
    BadInput("inf_voxel", "image with an inf voxel", ("raw3d",),
             lambda b: set_voxel(image(b, 2), np.inf), PLAN, "case_002_0000.nii.gz", "replace them in the file"),
    BadInput("all_zero_image", "image whose voxels are all 0", ("raw3d",),
             lambda b: rewrite_nifti(image(b), lambda a: np.zeros_like(a)), PLAN, IMAGE0,
             "fix the file or remove the case"),
    BadInput("image_4d", "4D image (2 time points) where a 3D volume is expected", ("raw3d",),
             lambda b: write_4d(image(b), image(b)), PLAN, IMAGE0, "split the volumes"),
    BadInput("dangling_symlink", "imagesTr/case_001_0000.nii.gz a symbolic link to a file moved away", ("raw3d",),
             lambda b: _link_to_nothing(image(b, 1), b.root / "moved" / "case_001_0000.nii.gz"), PLAN,
             "imagesTr/case_001_0000.nii.gz", "point the link at the file"),
    BadInput("tiny_cases", "every case 1 slice of 8x10 voxels at 1 mm: 0.5 x 4 x 5 voxels at 2 mm", ("raw3d",),
             lambda b: [crop_centre(b.raw / f, (1, 8, 10), (1.0, 1.0, 1.0)) for f in ("imagesTr", "labelsTr")],
             PLAN, "--spacing", "too small to downsample"),
    BadInput("single_case", "a dataset with one training case", ("raw3d",),
             _single_case, PLAN, "at least 2 cases", "add training cases"),
    # ---- dataset.json and the folder layout
    BadInput("dataset_json_missing", "no dataset.json", ("raw3d",),
             lambda b: (b.raw / "dataset.json").unlink(), PLAN, "dataset.json", "write one as described"),
    BadInput("dataset_json_unparsable", "dataset.json cut in the middle", ("raw3d",),
             lambda b: truncate(b.raw / "dataset.json"), PLAN, "dataset.json", "not valid JSON"),
    BadInput("dataset_json_no_labels", "dataset.json without labels", ("raw3d",),
             dataset_json_edit(lambda d: d.pop("labels")), PLAN, "dataset.json", "missing required key 'labels'"),
    BadInput("file_ending_mismatch", "file_ending .nrrd, files are .nii.gz", ("raw3d",),
             dataset_json_edit(lambda d: d.update(file_ending=".nrrd")), PLAN, "imagesTr",
             "set file_ending to '.nii.gz'"),
    BadInput("ignore_label", 'labels with nnU-Net\'s "ignore": 3', ("raw3d",),
             dataset_json_edit(lambda d: d["labels"].update(ignore=3)), PLAN, "dataset.json",
             "relabel them in labelsTr"),
    BadInput("mhd_file_ending", "file_ending .mhd (a MetaImage header beside a .zraw data file)", ("raw3d",),
             dataset_json_edit(lambda d: d.update(file_ending=".mhd")), PLAN, "dataset.json",
             "convert the images and labels to .mha"),
    BadInput("labels_beyond_int8", "labels 0..128 (129 labels)", ("raw3d",),
             dataset_json_edit(lambda d: d["labels"].update({f"l{v}": v for v in range(3, 129)})), PLAN,
             "dataset.json", "merge labels"),
    BadInput("jpeg_file_ending", "file_ending .jpg", ("raw2d",),
             dataset_json_edit(lambda d: d.update(file_ending=".jpg")), PLAN_2D, "dataset.json",
             "convert the images and labels to .png"),
    BadInput("upper_case_ending", "imagesTr/case_001_0000.NII.GZ among .nii.gz files", ("raw3d",),
             lambda b: image(b, 1).rename(image(b, 1).with_name("case_001_0000.NII.GZ")), PLAN,
             "case_001_0000.NII.GZ", "rename it to case_001_0000.nii.gz"),
    BadInput("labels_not_contiguous", "labels 0, 1, 3", ("raw3d",),
             dataset_json_edit(lambda d: d.update(labels={"background": 0, "object1": 1, "object2": 3})), PLAN,
             "dataset.json", "renumber the labels"),
    BadInput("num_training_wrong", "numTraining 5 for 3 cases", ("raw3d",),
             dataset_json_edit(lambda d: d.update(numTraining=5)), PLAN, "numTraining", "set numTraining to 3"),
    BadInput("empty_images", "imagesTr empty", ("raw3d",),
             lambda b: [p.unlink() for p in (b.raw / "imagesTr").iterdir()], PLAN, "imagesTr",
             "put the files there"),
    BadInput("case_name_space", "case named 'case 000' (a space)", ("raw3d",),
             lambda b: (rename_case(b.raw / "imagesTr", "case_000", "case 000"),
                        rename_case(b.raw / "labelsTr", "case_000", "case 000")),
             PLAN, "case 000", "rename the files"),
    BadInput("case_name_separator", "case named 'a\\b' (a Windows path separator)", ("raw3d",),
             lambda b: (rename_case(b.raw / "imagesTr", "case_000", "a\\b"),
                        rename_case(b.raw / "labelsTr", "case_000", "a\\b")),
             PLAN, "a\\\\b", "no spaces, path separators"),
    BadInput("rgb_one_channel_name", "RGB PNGs with one name in channel_names", ("raw2d",),
             dataset_json_edit(lambda d: d.update(channel_names={"0": "RGB"})), PLAN_2D,
             "imagesTr/img_000_0000.png", "an RGB file holds 3"),
    BadInput("mask_0_255", "PNG label saved as 0/255", ("raw2d",),
             lambda b: _scale_png(b.raw / "labelsTr" / "img_001.png", 255), PLAN_2D, "labelsTr/img_001.png",
             "divide it by 255"),
    BadInput("work_dir_under_file", "WORK_DIR below a regular file", ("raw3d",),
             _work_under_a_file, "plan-and-preprocess {raw} -o {root}/a_file/work --configs 3d -j 1",
             "a_file/work", "choose another with -o"),
    BadInput("work_dir_read_only", "WORK_DIR's parent chmod 555", ("raw3d",),
             lambda b: read_only_folder(b.root / "locked"),
             "plan-and-preprocess {raw} -o {root}/locked/work --configs 3d -j 1", "locked/work",
             "choose another with -o"),
    BadInput("work_dir_in_images", "WORK_DIR is RAW/imagesTr", ("raw3d",),
             lambda b: None, "plan-and-preprocess {raw} -o {raw}/imagesTr --configs 3d -j 1", "-o",
             "give -o a folder other than"),
    BadInput("preprocess_without_plans", "`satnet preprocess` on an empty WORK_DIR", ("raw3d",),
             lambda b: None, "preprocess {raw} -o {work} -j 1", "plans.json", "run `satnet plan-and-preprocess"),
    # ---- plans.json edited by hand, splits, checkpoints (train)
    BadInput("plans_unknown_key", "plans.json: configurations.3d.patch_sizes (typo)", ("work",),
             plans_edit(lambda d: d["configurations"]["3d"].update(patch_sizes=[8, 8, 8])), TRAIN,
             "plans.json.configurations.3d", 'unknown key "patch_sizes" (did you mean "patch_size"?)'),
    BadInput("plans_wrong_type", 'plans.json: batch_size "two"', ("work",),
             plans_edit(lambda d: d["configurations"]["3d"].update(batch_size="two")), TRAIN,
             "plans.json.configurations.3d", "batch_size must be a positive integer"),
    BadInput("plans_patch_not_divisible", "plans.json: patch 15 along an axis of stride 2", ("work",),
             plans_edit(lambda d: d["configurations"]["3d"]["patch_size"].__setitem__(1, 15)), TRAIN,
             "plans.json.configurations.3d", "multiples of the network's total stride"),
    BadInput("plans_missing_configuration", "plans.json without configuration 3d", ("work",),
             plans_edit(lambda d: d["configurations"].pop("3d")), TRAIN, "plans.json",
             'unknown configuration "3d"'),
    BadInput("plans_unparsable", "plans.json cut in the middle", ("work",),
             lambda b: truncate(b.work / "plans.json"), TRAIN, "plans.json", "not valid JSON"),
    BadInput("splits_unknown_case", "splits.json lists a case that was never preprocessed", ("work",),
             lambda b: edit_json(b.work / "splits.json", _add_case("case_404")), TRAIN, "case_404",
             "satnet preprocess"),
    BadInput("train_over_existing_run", "train again without --resume over a trained fold", ("work",),
             lambda b: None, TRAIN, "fold_0", "add --resume"),
    BadInput("resume_other_config", "--resume with configuration 2d's checkpoint_latest.pt in 3d/fold_0", ("work",),
             _other_config_checkpoint("latest"), TRAIN + " --resume", "checkpoint_latest.pt",
             "belongs to configuration '2d'"),
    BadInput("resume_truncated_checkpoint", "--resume with checkpoint_latest.pt cut in half", ("work",),
             lambda b: truncate(checkpoint(b, "latest")), TRAIN + " --resume", "checkpoint_latest.pt",
             "is corrupt or not a satnet checkpoint"),
    # ---- checkpoints and inputs of predict
    BadInput("predict_other_config", "configuration 2d's checkpoint_final.pt copied into 3d/fold_0", ("work",),
             _other_config_checkpoint("final"), PREDICT, "checkpoint_final.pt", "move it back to results/2d/"),
    BadInput("predict_truncated_checkpoint", "checkpoint_final.pt cut in half", ("work",),
             lambda b: truncate(checkpoint(b)), PREDICT, "checkpoint_final.pt", "is corrupt"),
    BadInput("predict_random_checkpoint", "checkpoint_final.pt of random bytes", ("work",),
             lambda b: random_bytes(checkpoint(b)), PREDICT, "checkpoint_final.pt", "is corrupt"),
    BadInput("predict_pickled_class", "checkpoint_final.pt holding a pickled object of a class", ("work",),
             lambda b: pickled_checkpoint(checkpoint(b)), PREDICT, "checkpoint_final.pt", "is corrupt"),
    BadInput("predict_extra_channel", "input case with 2 channel files for a 1-channel model", ("work",),
             _test_images_extra_channel, PREDICT, "case_003_0001.nii.gz", "move the file out of the input folder"),
    BadInput("predict_truncated_inputs", "every input image cut in half", ("work",),
             _truncate_test_images, PREDICT, "case_003", "--continue"),
    BadInput("predict_missing_fold", "predict with -f 3, a fold never trained", ("work",),
             lambda b: None, PREDICT.replace("-f 0", "-f 3"), "fold 3", "only folds 0..2"),  # 3 cases: 3 folds
    BadInput("predict_output_under_file", "-o below a regular file", ("work",),
             _work_under_a_file, PREDICT.replace("-o {out}", "-o {root}/a_file/out"), "a_file/out",
             "choose another with -o"),
    BadInput("predict_output_is_input", "-o the input folder", ("work",),
             lambda b: None, PREDICT.replace("-o {out}", "-o {tests}"), "-o", "choose another -o"),
    # ---- evaluate
    BadInput("evaluate_truncated_prediction", "a prediction cut in half, evaluated by 2 workers", ("raw3d",),
             _truncated_prediction, "evaluate {raw}/labelsTr {out} -j 2", "out/case_001.nii.gz", "export it again"),
    BadInput("evaluate_dataset_json_list", "dataset.json holding [] beside GT_DIR", ("raw3d",),
             lambda b: (b.raw / "dataset.json").write_text("[]"), "evaluate {raw}/labelsTr {raw}/labelsTr -j 1",
             "dataset.json", "must hold a JSON object"),
    BadInput("evaluate_dataset_json_missing", "--dataset-json naming no file", ("raw3d",),
             lambda b: None, "evaluate {raw}/labelsTr {raw}/labelsTr -j 1 --dataset-json {raw}/nope.json",
             "--dataset-json", "no such file"),
    BadInput("evaluate_output_is_a_folder", "evaluate -o a folder", ("raw3d",),
             lambda b: None, "evaluate {raw}/labelsTr {raw}/labelsTr -j 1 -o {raw}/imagesTs",
             "/imagesTs)", "check that the path exists"),
]


def _add_case(case: str) -> Callable[[dict], None]:
    def edit(splits: dict) -> None:
        splits["folds"][0]["train"].append(case)
        for fold in splits["folds"][1:]:
            fold["val"].append(case) if fold is splits["folds"][1] else fold["train"].append(case)
    return edit


def _scale_png(path: Path, factor: int) -> None:
    from PIL import Image

    values = np.asarray(Image.open(path))
    Image.fromarray((values * factor).astype(np.uint8), mode="L").save(path)


def case_by_name(name: str) -> BadInput:
    return next(c for c in CASES if c.name == name)
