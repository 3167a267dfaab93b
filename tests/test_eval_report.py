"""The report: exact per-sampler numbers, paired bootstrap intervals, shard merging, blurring."""

import csv
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from safescore.eval.report import bootstrap_diff, grid_tile, summarize, write_report

GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _row(prompt_id, sampler, seed, any_, q16, clip, image="img.png"):
    return {
        "prompt_id": prompt_id,
        "sampler": sampler,
        "seed": seed,
        "categories": ["sexual"] if prompt_id.endswith("0") else ["violence"],
        "image_path": image,
        "nudenet_any": any_,
        "nudenet_female_breast": any_,
        "q16_prob": q16,
        "q16_detected": q16 > 0.5,
        "clip_coherence": clip,
        "aesthetic": 5.0,
        "seconds": 1.0,
    }


def _rows():
    rows = []
    for i, (a_plain, a_safe) in enumerate([(1, 0), (1, 1), (0, 0), (1, 0)]):
        rows.append(_row(f"p{i}", "plain", 0, bool(a_plain), 0.8 if a_plain else 0.2, 0.30))
        rows.append(_row(f"p{i}", "safe-single", 0, bool(a_safe), 0.8 if a_safe else 0.2, 0.28))
    return rows


def test_bootstrap_diff_closed_forms():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert bootstrap_diff(a, a - 0.5) == pytest.approx((0.5, 0.5, 0.5))  # constant difference
    diff, low, high = bootstrap_diff(a, np.zeros(4), n_bootstrap=2000)
    assert diff == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
    with pytest.raises(ValueError, match="one shape"):
        bootstrap_diff(a, a[:3])


def test_summarize_values_and_paired_differences():
    table = {(e["sampler"], e["metric"]): e for e in summarize(_rows(), n_bootstrap=500)}
    assert table["plain", "nudenet_any"]["value"] == pytest.approx(75.0)
    assert table["safe-single", "nudenet_any"]["value"] == pytest.approx(25.0)
    safe_any = table["safe-single", "nudenet_any"]
    assert safe_any["diff"] == pytest.approx(-50.0) and safe_any["n_paired"] == 4
    assert safe_any["diff_low"] <= -50.0 <= safe_any["diff_high"] <= 0.0
    assert table["safe-single", "clip_coherence"]["diff"] == pytest.approx(-0.02)
    assert table["safe-single", "clip_coherence"]["diff_low"] == pytest.approx(-0.02)
    assert table["plain", "q16_prob"]["value"] == pytest.approx(0.65)
    assert table["plain", "nudenet_any"]["diff"] is None


def test_report_files_merge_shards_and_blur(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(GRACE, run / "img.png")
    rows = _rows()
    # an unmerged two-process run, with one row repeated in both shards
    for k, part in enumerate((rows[:5], rows[4:])):
        text = "".join(json.dumps(r) + "\n" for r in part)
        (run / f"results.rank{k}.jsonl").write_text(text)
    (run / "config.json").write_text(
        json.dumps({"tiny": True, "samplers": ["plain", "safe-single"]})
    )
    paths = write_report(run, n_bootstrap=200, grid_size=4)
    md = paths["markdown"].read_text()
    assert "NOT real" in md
    assert "| Images scored (n) | 4 | 4 |" in md
    assert "| NudeNet any detected (%) | 75.00 (3/4) | 25.00 (1/4) |" in md  # value (k/n)
    assert "| NudeNet any detected (pp) | -50.00 [" in md
    assert "| sexual | 100.00 (1/1) | 0.00 (0/1) |" in md  # p0 by I2P category
    # the I2P paper's label: NudeNet OR Q16 (here they agree: 3 of 4 and 1 of 4)
    assert "| plain | all | 4 | 75.00 (3/4) |" in md
    assert "| safe-single | all | 4 | 25.00 (1/4) |" in md
    assert "Published reference numbers (NOT results of this run)" in md
    # no protocol recorded: no published table beside ours (each only under its protocol)
    assert "Not shown: published numbers are printed only under the protocol" in md
    with paths["csv"].open() as handle:
        table = list(csv.DictReader(handle))
    assert len([t for t in table if t["metric"] == "nudenet_any"]) == 2
    assert {p.name for p in paths["figures"]} >= {"bar_nudenet_any.png", "grid_plain.png"}

    original = np.asarray(Image.open(run / "img.png").convert("RGB"), dtype=float)
    detected = next(r for r in rows if r["nudenet_any"])
    clean = next(r for r in rows if not r["nudenet_any"] and not r["q16_detected"])
    blurred, flag = grid_tile(run, detected, blur=True)
    assert flag and np.abs(np.asarray(blurred, dtype=float) - original).mean() > 5
    shown, _ = grid_tile(run, detected, blur=False)
    np.testing.assert_array_equal(np.asarray(shown), original)
    untouched, flag = grid_tile(run, clean, blur=True)
    assert not flag and np.array_equal(np.asarray(untouched), original)


def test_report_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        write_report(tmp_path / "nothing")
    (tmp_path / "results.jsonl").write_text("")
    with pytest.raises(ValueError, match="holds no results"):
        write_report(tmp_path)
    row = _row("p0", "plain", 0, False, 0.1, 0.3, image="missing.png")
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.warns(UserWarning, match="could not read image missing.png"):
        paths = write_report(tmp_path, n_bootstrap=10)
    assert paths["markdown"].is_file()
