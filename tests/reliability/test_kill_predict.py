"""SIGKILL during `satnet predict`, then `--continue`: every mask on disk is complete and valid (readable, the
input's geometry), the rest are produced, and the folder ends byte-identical to an uninterrupted run's."""
from __future__ import annotations

from satnet.io.images import read_image, read_label
from tests.reliability.faults import run_killed, stray_temporaries
from tests.reliability.sandbox import NUM_TEST, predict, run_cli, snapshot


def test_killed_half_way_then_continue_completes_every_mask(setup, tmp_path):
    images, work = setup
    reference = run_cli(predict(images, tmp_path / "reference", work))
    assert reference.code == 0, reference.stderr
    out = tmp_path / "out"
    run_killed(predict(images, out, work), kill="*.nii.gz:3")  # the 3rd mask written, not yet moved into place
    masks = sorted(out.glob("*.nii.gz"))
    assert len(masks) == 2 and len(stray_temporaries(out)) == 1
    for mask in masks:  # complete and valid: readable, on its input's grid, as an uninterrupted run wrote it
        seg, geometry = read_label(mask)
        assert geometry == read_image([images / mask.name.replace(".nii.gz", "_0000.nii.gz")])[1]
        assert mask.read_bytes() == (tmp_path / "reference" / mask.name).read_bytes()
    resumed = run_cli(predict(images, out, work, "--continue"))
    assert resumed.code == 0, resumed.stderr
    assert f"predicted {NUM_TEST - 2} case(s)" in resumed.stdout and "(2 already there, skipped)" in resumed.stdout
    masks = {k: v for k, v in snapshot(out).items() if k != "predict_summary.json"}  # its seconds differ
    assert masks == {k: v for k, v in snapshot(tmp_path / "reference").items() if k != "predict_summary.json"}
    assert (out / "predict_summary.json").is_file()  # every mask, and no temporary left
