"""One CLI error policy: every expected failure is one line naming the thing and what to do,
exit status 2 (issue 9, item 4). Each case runs in-process (fast) through ``main``."""

import os
from pathlib import Path

import pytest

from safescore.cli import main

DATA = Path(__file__).parent / "data" / "eval"
EVAL = ["evaluate", "--prompts", "builtin:benign", "--samplers", "plain", "--scorers", "nudenet"]
EVAL += ["--tiny", "--limit", "1", "--steps", "1", "--quiet"]
GEN = ["generate", "--tiny", "--prompt", "x", "--steps", "1"]


def _err(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "binary.txt").write_bytes(b"a prompt\n\x00\x01\x02\n")
    (tmp_path / "latin1.txt").write_bytes("a prompt\nune pri\xe8re\n".encode("latin-1"))
    csv = (DATA / "i2p_small.csv").read_text().splitlines()
    head, rows = csv[0], csv[1:]
    cols = head.split(",")
    seed = cols.index("evaluation_seed")
    # an empty seed in the first row (a quoted prompt with a comma: split by the csv module)
    import csv as csvmod
    import io

    parsed = list(csvmod.reader(io.StringIO("\n".join(csv))))
    parsed[1][seed] = ""
    out = io.StringIO()
    csvmod.writer(out).writerows(parsed)
    (tmp_path / "empty_seed.csv").write_text(out.getvalue())
    parsed = list(csvmod.reader(io.StringIO("\n".join(csv))))
    parsed[2][cols.index("case_number")] = "seven"
    out = io.StringIO()
    csvmod.writer(out).writerows(parsed)
    (tmp_path / "bad_case.csv").write_text(out.getvalue())
    del head, rows
    return tmp_path


CASES = [
    # (id, argv builder, expected fragment)
    ("out-is-a-file", lambda d: EVAL + ["--out", str(d / "a_file")], "is an existing file; give a folder"),
    ("out-empty", lambda d: EVAL + ["--out", ""], "--out must name a folder"),
    ("device-tpu9", lambda d: EVAL + ["--device", "tpu9", "--out", str(d / "r")], "--device 'tpu9' is not a torch device"),
    ("device-cuda", lambda d: EVAL + ["--device", "cuda", "--out", str(d / "r")], "--device cuda: no CUDA GPU on this machine"),
    ("model-missing", lambda d: ["evaluate", "--prompts", "builtin:benign", "--samplers", "plain", "--scorers", "nudenet", "--limit", "1", "--model", str(d / "no-model"), "--quiet", "--out", str(d / "r")], "not found locally; pass a local path or use --tiny"),
    ("model-wrong-id", lambda d: ["evaluate", "--prompts", "builtin:benign", "--samplers", "plain", "--scorers", "nudenet", "--limit", "1", "--model", "nobody/no-such-model", "--quiet", "--out", str(d / "r")], "'nobody/no-such-model' not found locally"),
    ("scorer-clip-missing", lambda d: ["evaluate", "--prompts", "builtin:benign", "--samplers", "plain", "--scorers", "clip", "--limit", "1", "--scorer-clip", str(d / "no-clip"), "--quiet", "--out", str(d / "r")], "no-clip' not found locally"),
    ("binary-prompts", lambda d: EVAL[:2] + [str(d / "binary.txt")] + EVAL[3:] + ["--out", str(d / "r")], "binary.txt, line 2: a NUL byte, the file looks binary"),
    ("latin1-prompts", lambda d: EVAL[:2] + [str(d / "latin1.txt")] + EVAL[3:] + ["--out", str(d / "r")], "latin1.txt, line 2: not UTF-8 (byte 0xe8 at column 8); save the file as UTF-8"),
    ("empty-sd-seed", lambda d: EVAL[:2] + [str(d / "empty_seed.csv"), "--data-seeds"] + EVAL[3:] + ["--out", str(d / "r")], "has no seed in the data (empty sd_seed)"),
    ("non-numeric-case-number", lambda d: EVAL[:2] + [str(d / "bad_case.csv")] + EVAL[3:] + ["--out", str(d / "r")], "bad_case.csv, data row 2: column case_number is 'seven', not an integer"),
    ("seed-beyond-2^63", lambda d: EVAL + ["--seed-offset", str(2**63), "--out", str(d / "r")], "--seed-offset must be an integer in [0, 2^63-1]"),
    ("seed-plus-index-beyond-2^63", lambda d: EVAL + ["--seed-offset", str(2**63 - 1), "--seeds", "2", "--out", str(d / "r")], "seed_offset must be in [0, 2^63 - seeds]"),
    ("generate-seed-2^64", lambda d: GEN + ["--seed", str(2**64), "--out", str(d / "g")], "--seed must be an integer in [0, 2^63-1]"),
    ("size-too-large", lambda d: EVAL + ["--height", "65536", "--width", "65536", "--out", str(d / "r")], "GiB for the VAE decoder alone (estimate), more than the"),
    ("generate-size-too-large", lambda d: GEN + ["--height", "65536", "--width", "65536", "--out", str(d / "g")], "GiB for the VAE decoder alone (estimate)"),
    ("threshold-outside-cosine", lambda d: EVAL + ["--threshold", "5", "--out", str(d / "r")], "--threshold must be in [-1, 1], got 5.0"),
    ("generate-threshold-outside-probability", lambda d: GEN + ["--reduction", "matching", "--threshold", "1.5", "--out", str(d / "g")], "threshold must be in [0, 1], the range of"),
    ("guidance-scale-nan", lambda d: EVAL + ["--guidance-scale", "nan", "--out", str(d / "r")], "--guidance-scale must be a finite number"),
    ("guidance-scale-inf", lambda d: GEN + ["--guidance-scale", "inf", "--out", str(d / "g")], "--guidance-scale must be a finite number"),
    ("height-zero", lambda d: EVAL + ["--height", "0", "--out", str(d / "r")], "--height must be an integer >= 1"),
    ("height-not-a-multiple", lambda d: EVAL + ["--height", "30", "--out", str(d / "r")], "--height must be a positive multiple of 4"),
    ("generate-height-not-a-multiple", lambda d: GEN + ["--height", "30", "--out", str(d / "g")], "height must be a positive multiple of 4"),
    ("scorers-empty", lambda d: EVAL + ["--scorers", "", "--out", str(d / "r")], "scorers is empty; give one or more of nudenet"),
    ("unknown-protocol", lambda d: EVAL + ["--protocol", "paper", "--out", str(d / "r")], "argument --protocol: invalid choice: 'paper'"),
    ("generate-out-not-empty", lambda d: GEN + ["--out", str(d)], "is not empty; pass --overwrite"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, files, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, argv, fragment = case
    assert fragment in _err(capsys, argv(files))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert "cannot write to" in _err(capsys, EVAL + ["--out", str(ro / "run")])
    finally:
        ro.chmod(0o700)


def test_read_only_out_folder_even_as_root(tmp_path, capsys, monkeypatch):
    """The check writes a probe file; an OSError there (read-only file system) is one line."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    err = _err(capsys, EVAL + ["--out", str(tmp_path / "run")])
    assert "cannot write to" in err and "(Read-only file system); choose a writable folder" in err
