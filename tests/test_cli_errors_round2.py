"""The second round of bad input (issue 17 item 2, issue 19): every case is one line naming the
option or file and what is allowed, exit status 2, nothing recorded and ignored. Each case runs
in-process through ``main`` on the tiny components or on files alone (fast)."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from test_cli_errors import _err  # one line, exit 2, no traceback

from safescore.cli import main
from safescore.eval.runner import read_rows

DATA = Path(__file__).parent / "data" / "eval"
TINY = ["--tiny", "--samplers", "plain", "--scorers", "none", "--steps", "1", "--quiet"]
EVAL = ["evaluate", "--prompts", "builtin:benign", "--limit", "1", *TINY]
REAL = ["evaluate", "--prompts", "builtin:benign", "--limit", "1", "--scorers", "none", "--quiet"]
MINI = ["evaluate", "--mini", "--limit", "1", "--steps", "1", "--quiet"]
GEN_MINI = ["generate", "--mini", "--prompt", "a handwritten three", "--steps", "1"]
CAL_TINY = ["calibrate", "--tiny", "--prompts", "x", "--steps", "1", "--seeds", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("id,prompt\n")
    (d / "duplicate_ids.csv").write_text("id,prompt\na,one\na,two\n")
    (d / "blank_prompt.csv").write_text("id,prompt\na,one\nb,   \n")
    (d / "empty_ids.csv").write_text("id,prompt\n,one\n,two\n")
    (d / "crlf.csv").write_bytes(b"id,prompt\r\na,one apple\r\nb,two pears\r\n")
    (d / "long_and_unicode.txt").write_text("word " * 2000 + "\nune prière à 日本語\n")
    (d / "no_config").mkdir()
    (d / "not_clip").mkdir()
    (d / "not_clip" / "config.json").write_text('{"model_type": "bert"}')
    return d


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny run of 2 images (plain, 2 prompts), the base of the report cases."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    args = ["evaluate", "--prompts", "builtin:benign", "--limit", "2", "--tiny"]
    args += [
        "--samplers",
        "plain",
        "--scorers",
        "clip",
        "--steps",
        "1",
        "--quiet",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    return run


def _copy(run, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


CASES = [
    # evaluate --protocol: unknown, and overrides the data would replace (recorded, ignored)
    ("protocol-unknown", lambda d: EVAL + ["--protocol", "paper", "--out", str(d / "r")],
     "argument --protocol: invalid choice: 'paper' (choose from 'default', 'thesis', 'sld')"),
    ("sld-seed-offset", lambda d: EVAL + ["--protocol", "sld", "--prompts", str(DATA / "i2p_small.csv"), "--seed-offset", "5", "--out", str(d / "r")],
     "--seed-offset does not apply with --data-seeds (each prompt's sd_seed is used; the sld protocol turns it on); add --no-data-seeds"),
    # (--protocol sld --guidance-scale 5 is an override now: the I2P code runs SD at CFG 7.5, not
    # each prompt's sd_guidance_scale, so sld no longer turns --data-guidance on)
    # --batch-size
    ("batch-size-0", lambda d: EVAL + ["--batch-size", "0", "--out", str(d / "r")], "--batch-size must be an integer >= 1, got 0"),
    ("batch-size-negative", lambda d: EVAL + ["--batch-size", "-3", "--out", str(d / "r")], "--batch-size must be an integer >= 1, got -3"),
    ("batch-size-not-integer", lambda d: EVAL + ["--batch-size", "2.5", "--out", str(d / "r")], "--batch-size must be an integer >= 1, got '2.5'"),
    ("batch-size-above-images", lambda d: EVAL + ["--batch-size", "64", "--out", str(d / "r")],
     "--batch-size 64 is larger than the 1 image(s) one batch can hold in this run (a batch has one sampler and one guidance scale); give at most 1"),
    # --guidance-clip / --scorer-clip: a missing folder, a folder that is not a CLIP model
    ("guidance-clip-missing", lambda d: REAL + ["--samplers", "safe-single", "--guidance-clip", str(d / "no-clip"), "--out", str(d / "r")],
     "no-clip' not found locally: no such folder; give a CLIP model folder or a hub id such as openai/clip-vit-base-patch16"),
    ("guidance-clip-not-clip", lambda d: REAL + ["--samplers", "safe-single", "--guidance-clip", str(d / "not_clip"), "--out", str(d / "r")],
     "not_clip' holds a bert model, not CLIP (config.json model_type is 'bert', not 'clip')"),
    ("scorer-clip-no-config", lambda d: REAL + ["--scorers", "clip", "--scorer-clip", str(d / "no_config"), "--out", str(d / "r")],
     "no_config' is not a model folder (no config.json in it)"),
    ("scorer-clip-file", lambda d: REAL + ["--scorers", "clip", "--scorer-clip", str(d / "empty.csv"), "--out", str(d / "r")],
     "empty.csv' is not a model folder (no config.json in it)"),
    # prompt sources
    ("plus-joined-bad-part", lambda d: EVAL + ["--prompts", f"builtin:benign+{d / 'missing.csv'}", "--out", str(d / "r")],
     "prompts: in 'builtin:benign+"),
    ("empty-csv", lambda d: EVAL + ["--prompts", str(d / "empty.csv"), "--out", str(d / "r")],
     "empty.csv is empty; a prompt CSV needs a header row (e.g. id,prompt) and one row per prompt"),
    ("header-only-csv", lambda d: EVAL + ["--prompts", str(d / "header_only.csv"), "--out", str(d / "r")], "header_only.csv: the file holds no prompt"),
    ("duplicate-ids", lambda d: EVAL + ["--prompts", str(d / "duplicate_ids.csv"), "--out", str(d / "r")],
     "duplicate_ids.csv: prompt ids must be unique, 'duplicate_ids-a' occurs twice"),
    ("whitespace-prompt", lambda d: EVAL + ["--prompts", str(d / "blank_prompt.csv"), "--out", str(d / "r")],
     "blank_prompt.csv, data row 2: the prompt is empty (or only spaces); fill it in or remove the row"),
    ("empty-ids", lambda d: EVAL + ["--prompts", str(d / "empty_ids.csv"), "--out", str(d / "r")],
     "empty_ids.csv, data row 1: column id is empty; give every row an id, or remove the id column"),
    # --mini: options it would record and ignore
    ("mini-guidance-clip", lambda d: MINI + ["--guidance-clip", str(d), "--out", str(d / "r")],
     "--guidance-clip does not apply to --mini (the mini model uses its own UNet, CLIP and digit classifier); leave it out"),
    ("mini-scorer-clip", lambda d: MINI + ["--scorer-clip", str(d), "--out", str(d / "r")], "--scorer-clip does not apply to --mini"),
    ("mini-model", lambda d: MINI + ["--model", str(d), "--out", str(d / "r")], "--model does not apply to --mini"),
    ("mini-clip-preprocessing", lambda d: MINI + ["--clip-preprocessing", "author", "--out", str(d / "r")], "--clip-preprocessing does not apply to --mini"),
    ("mini-q16", lambda d: MINI + ["--scorers", "digit,q16", "--out", str(d / "r")],
     "scorers: q16 has no trained head for the mini CLIP (it would score with random weights); with --mini use digit, clip"),
    ("mini-size", lambda d: MINI + ["--height", "32", "--out", str(d / "r")],
     "--height 32: the mini model makes 16×16 images only (it was trained at that size); leave --height out"),
    ("mini-unknown-category", lambda d: MINI + ["--categories", "four", "--out", str(d / "r")],
     "unknown I2P category 'four'; known: hate, harassment, violence, self-harm, sexual, shocking, illegal activity, benign, three"),
    ("generate-mini-size", lambda d: GEN_MINI + ["--height", "20", "--out", str(d / "g")],
     "--height 20: the mini model makes 16×16 images only (it was trained at that size); leave --height out"),
    ("generate-mini-clip", lambda d: GEN_MINI + ["--clip", str(d), "--out", str(d / "g")],
     "--clip does not apply to --mini (it brings its own UNet and CLIP); leave it out"),
    ("generate-mini-model", lambda d: GEN_MINI + ["--model", str(d), "--out", str(d / "g")], "--model does not apply to --mini"),
    ("generate-mini-preprocessing", lambda d: GEN_MINI + ["--clip-preprocessing", "author", "--out", str(d / "g")],
     "--clip-preprocessing does not apply to --mini (the mini CLIP has its own mean/std)"),
    ("calibrate-mini-clip", lambda d: ["calibrate", "--mini", "--clip", str(d), "--out", str(d / "c")], "--clip does not apply to --mini"),
    ("calibrate-tiny-model", lambda d: CAL_TINY + ["--model", str(d), "--out", str(d / "c")], "--model does not apply to --tiny"),
    ("calibrate-mini-preprocessing", lambda d: ["calibrate", "--mini", "--clip-preprocessing", "author", "--out", str(d / "c")],
     "--clip-preprocessing does not apply to --mini"),
    # calibrate --thresholds
    ("thresholds-inf", lambda d: CAL_TINY + ["--thresholds", "0:inf:0.1", "--out", str(d / "c")],
     "--thresholds START:STOP:STEP must be finite numbers (e.g. 0:1:0.01), got '0:inf:0.1'"),
    ("thresholds-nan", lambda d: CAL_TINY + ["--thresholds", "nan:1:0.1", "--out", str(d / "c")], "must be finite numbers"),
    ("thresholds-too-many", lambda d: CAL_TINY + ["--thresholds", "0:1:1e-12", "--out", str(d / "c")],
     "--thresholds 0:1:1e-12 gives 1,000,000,000,001 thresholds, more than 100,001; use a larger STEP"),
    ("thresholds-two-parts", lambda d: CAL_TINY + ["--thresholds", "0:1", "--out", str(d / "c")], "--thresholds must be START:STOP:STEP (e.g. 0:1:0.01), got '0:1'"),
    ("thresholds-reversed", lambda d: CAL_TINY + ["--thresholds", "1:0:0.1", "--out", str(d / "c")], "needs STOP >= START and STEP > 0"),
    ("thresholds-outside-p_h", lambda d: CAL_TINY + ["--thresholds", "5:10:1", "--out", str(d / "c")],
     "--thresholds 5:10:1 leaves the range of p_h (CLIPConceptDensity, reduction mean): [-1, 1]"),
    # demo
    ("demo-out-empty", lambda d: ["demo", "--out", "", "--samples", "10", "--steps", "2", "--no-figures", "--quiet"], "--out must name a folder, got ''"),
    ("demo-seed-2^64", lambda d: ["demo", "--out", str(d / "demo"), "--seed", str(2**64)], "--seed must be an integer in [0, 2^63-1], got 18446744073709551616"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, files, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(files)  # a case that wrongly wrote into "." would write here
    _, argv, fragment = case
    assert fragment in _err(capsys, argv(files))
    assert not (files / "metrics.json").exists()


def test_crlf_long_and_unicode_prompts_are_kept_whole(files, tmp_path):
    run = tmp_path / "run"
    for name in ("crlf.csv", "long_and_unicode.txt"):
        argv = ["evaluate", "--prompts", str(files / name), *TINY, "--out", str(run / name)]
        assert main(argv) == 0
    crlf = {r["prompt_id"]: r["prompt"] for r in read_rows(run / "crlf.csv")}
    assert crlf == {"crlf-a": "one apple", "crlf-b": "two pears"}  # no stray \r
    prompts = sorted(r["prompt"] for r in read_rows(run / "long_and_unicode.txt"))
    assert prompts == sorted([("word " * 2000).strip(), "une prière à 日本語"])


def test_mini_categories_three_is_accepted(tmp_path):
    """The mini-I2P set's own labels (three, benign) are valid categories."""
    from safescore.eval.runner import EvalConfig, load_run_prompts

    config = EvalConfig.from_protocol(mini=True, categories=["three"])
    prompts = load_run_prompts(config)
    assert len(prompts) > 0 and all("three" in c for c in prompts["categories"])
    benign = load_run_prompts(EvalConfig.from_protocol(mini=True, categories="benign"))
    assert all(c == ["benign"] for c in benign["categories"])


# ---- report on empty, partial and corrupted runs


def _break(run, tmp_path, what):
    target = _copy(run, tmp_path, what)
    results = target / "results.jsonl"
    lines = results.read_text().splitlines()
    if what == "config-list":
        (target / "config.json").write_text("[1, 2]\n")
    elif what == "config-null":
        (target / "config.json").write_text("null\n")
    elif what == "config-string":
        (target / "config.json").write_text('"x"\n')
    elif what == "config-invalid":
        (target / "config.json").write_text("{bad\n")
    elif what == "score-not-a-number":
        row = json.loads(lines[0])
        row["clip_coherence"] = "high"
        results.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    elif what == "categories-string":
        row = json.loads(lines[1])
        row["categories"] = "three"
        results.write_text("\n".join([lines[0], json.dumps(row)]) + "\n")
    elif what == "corrupted-line":
        results.write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    elif what == "empty":
        results.write_text("")
    return target


REPORT_CASES = [
    ("config-list", "config.json holds list [1, 2], not a run configuration (a JSON object)"),
    ("config-null", "config.json holds NoneType null, not a run configuration (a JSON object)"),
    ("config-string", 'config.json holds str "x", not a run configuration (a JSON object)'),
    ("config-invalid", "config.json is not valid JSON (Expecting property name"),
    ("score-not-a-number", "results.jsonl, line 1: column clip_coherence is 'high', not a number; fix or remove that line"),
    ("categories-string", "results.jsonl, line 2: column categories is 'three', not a list of strings"),
    ("corrupted-line", "results.jsonl, line 2: not a results row (a JSON object with prompt_id, sampler, seed)"),
    ("empty", "holds no results (results.jsonl is missing or empty)"),
]  # fmt: skip


@pytest.mark.parametrize("what, fragment", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_report_on_a_broken_run(what, fragment, tiny_run, tmp_path, capsys):
    run = _break(tiny_run, tmp_path, what)
    assert fragment in _err(capsys, ["report", str(run), "--no-figures"])


def test_report_on_a_partial_run_says_so(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    first = (run / "results.jsonl").read_text().splitlines()[0]
    (run / "results.jsonl").write_text(first + "\n")
    assert main(["report", str(run), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "note: the run is incomplete: 1 of 2 images are missing" in err
    assert "plain | " in (run / "report.md").read_text()


REPORT_OPTION_CASES = [
    ("bootstrap-huge", ["--bootstrap", "1000000000"], "--bootstrap must be an integer in [1, 100000], got 1000000000"),
    ("inception-without-references", ["--inception-weights", "w.pth"],
     "--inception-weights is used for FID/KID only, which need --reference-images FOLDER"),
    ("references-missing", ["--reference-images", "no-such-folder"], "reference images: no-such-folder is not a folder"),
    ("references-empty", ["--reference-images", "empty_folder"], "reference images: no .png/.jpg/.jpeg/.webp/.bmp files under empty_folder"),
    ("references-not-images", ["--reference-images", "not_images"], "--reference-images: cannot identify image file"),
    ("inception-weights-missing", ["--reference-images", "mixed", "--inception-weights", "nothing.pth"],
     "--inception-weights nothing.pth: no such file"),
]  # fmt: skip


@pytest.mark.parametrize(
    "argv, fragment", [c[1:] for c in REPORT_OPTION_CASES], ids=[c[0] for c in REPORT_OPTION_CASES]
)
def test_report_options(argv, fragment, tiny_run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "not_images").mkdir()
    (tmp_path / "not_images" / "a.png").write_text("not a png")
    (tmp_path / "mixed").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "mixed" / "a.png")
    Image.new("RGB", (40, 24)).save(tmp_path / "mixed" / "b.png")
    run = _copy(tiny_run, tmp_path)
    assert fragment in _err(capsys, ["report", str(run), "--no-figures", *argv])


def test_report_missing_fid_package_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    """An optional package's own message (torch-fidelity for FID/KID) is one line, exit 2."""
    from safescore.eval import report

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("FID/KID with Inception need torch-fidelity: pip install x")

    monkeypatch.setattr(report, "_quality_lines", missing)
    run = _copy(tiny_run, tmp_path)
    err = _err(capsys, ["report", str(run), "--no-figures"])
    assert "FID/KID with Inception need torch-fidelity" in err


def test_a_real_import_failure_keeps_its_traceback(tiny_run, tmp_path, monkeypatch):
    from safescore.eval import report

    def broken(*args, **kwargs):
        import safescore_no_such_module  # noqa: F401

    monkeypatch.setattr(report, "_quality_lines", broken)
    with pytest.raises(ModuleNotFoundError):
        main(["report", str(_copy(tiny_run, tmp_path)), "--no-figures"])


def test_demo_animate_into_a_read_only_folder(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    err = _err(capsys, ["demo", "--animate", "--out", str(tmp_path / "ro"), "--quiet"])
    assert "cannot write to" in err and "choose a writable folder" in err
