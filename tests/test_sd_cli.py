"""``safescore generate`` with --tiny, offline."""

import json

import pytest

from safescore.cli import main


def test_generate_tiny_compare(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["generate", "--tiny", "--prompt", "a cat", "--prompt", "a dog", "--steps", "2",
            "--height", "32", "--width", "32", "--reduction", "matching", "--threshold", "0",
            "--gamma", "50", "--compare", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in printed
    record = json.loads((out / "generation.json").read_text())
    assert record["random_weights"] is True and "RANDOM WEIGHTS" in record["note"]
    assert record["prompts"] == ["a cat", "a dog"] and record["seeds"] == [0, 1]
    assert len(record["harm"]) == 2 and len(record["harm"][0]) == 2  # (images, steps)
    assert record["corrected"] == [[True, True], [True, True]]  # threshold 0 < any probability
    assert (record["gamma"], record["threshold"]) == (50.0, 0.0)
    for name in ("safe_000.png", "safe_001.png", "plain_000.png", "plain_001.png", "compare.png"):
        assert (out / name).is_file()


def test_generate_sd_filter_preset(tmp_path):
    argv = ["generate", "--tiny", "--preset", "sd-filter", "--prompt", "x", "--steps", "1",
            "--height", "32", "--width", "32", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert (
        "SafetyCheckerDensity" in json.loads((tmp_path / "generation.json").read_text())["density"]
    )


def test_missing_weights_is_a_one_line_error(tmp_path, capsys):
    argv = ["generate", "--prompt", "x", "--model", str(tmp_path / "none"), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not found locally; pass a local path or use --tiny" in err


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--tiny", "--prompt", "x", "--steps", "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--steps must be an integer >= 1" in err and len(err.strip().splitlines()) == 1
    argv = ["generate", "--tiny", "--prompt", "x", "--preset", "sd-filter", "--concept", "gore",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    assert "--concept" in capsys.readouterr().err


def test_generate_refuses_a_non_empty_out_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["generate", "--tiny", "--prompt", "x", "--num-images", "2", "--steps", "1",
            "--height", "32", "--width", "32", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    before = (out / "safe_000.png").read_bytes()
    (out / "mine.txt").write_text("keep me")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not empty; pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "safe_000.png").read_bytes() == before  # nothing touched
    # --overwrite: generate's own files are replaced (stale ones removed), others are kept
    argv[argv.index("2")] = "1"
    assert main(argv + ["--overwrite"]) == 0
    assert (out / "safe_000.png").is_file() and not (out / "safe_001.png").exists()
    assert (out / "mine.txt").read_text() == "keep me"
    assert json.loads((out / "generation.json").read_text())["seeds"] == [0]
