"""Nothing lost, nothing duplicated: the run lock, torn rows, unique image names, folders
without config.json, failed images, batches and shards, malformed rows, escaping in reports.

Races are synchronised on the lock itself or on a pipe, never on sleeps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from safescore.cli import main
from safescore.eval.report import md_escape, write_report
from safescore.eval.runner import (
    EvalConfig,
    ProcessInfo,
    RunLock,
    RunLockedError,
    read_rows,
    row_key,
    run_evaluation,
)
from safescore.eval.samplers import Generated, available_samplers, register_sampler

ROOT = Path(__file__).resolve().parents[1]
FAIL_PROMPTS: set = set()  # prompts the "dur-flaky" sampler fails on (non-finite values)
CALLS: list = []  # batches seen by "dur-batched"


def _image(seed, prompt):
    rng = np.random.default_rng([seed, len(prompt), sum(map(ord, prompt))])
    return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def _flaky(context):
    def generate(prompt, seed, guidance_scale):
        if prompt in FAIL_PROMPTS:
            raise FloatingPointError("non-finite gradient of density.log_prob at step 3 (t=801)")
        return Generated(_image(seed, prompt))

    return generate


def _batched(context):
    def one_batch(prompts, seeds, guidance_scale):
        CALLS.append(list(zip(prompts, seeds)))
        if any(p in FAIL_PROMPTS for p in prompts):
            raise FloatingPointError("non-finite values in x0_hat at step 1 (t=901)")
        return [Generated(_image(s, p)) for p, s in zip(prompts, seeds)]

    def generate(prompt, seed, guidance_scale):
        return one_batch([prompt], [seed], guidance_scale)[0]

    generate.batch = one_batch
    return generate


def _buggy(context):
    def generate(prompt, seed, guidance_scale):
        raise TypeError("a genuine bug")

    return generate


for _name, _factory in (("dur-flaky", _flaky), ("dur-batched", _batched), ("dur-bug", _buggy)):
    if _name not in available_samplers():
        register_sampler(_name, _factory)


def _config(**overrides):
    base = dict(prompts="builtin:benign", samplers=["dur-flaky"], seeds=1, limit=3, tiny=True)
    base["scorers"] = "none"
    base.update(overrides)
    return EvalConfig(**base)


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


# --------------------------------------------------------------------------- the lock


def test_a_locked_run_directory_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunLockedError, match=rf"in use by .*pid {os.getpid()} on "):
            run_evaluation(_config(), run, device="cpu", progress=False)
        assert not (run / "results.jsonl").exists()
    # released: the same run now goes through, and releases the lock at its end
    assert run_evaluation(_config(), run, device="cpu", progress=False)["generated"] == 3
    RunLock(run).acquire().release()


def test_a_second_evaluate_process_is_refused(tmp_path, capsys):
    """Another process holds the lock (synchronised on a pipe); `evaluate` exits 2 naming it."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from safescore.eval.runner import RunLock; "
         f"lock = RunLock({str(run)!r}).acquire(); print('locked', flush=True); "
         "sys.stdin.readline(); lock.release()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["evaluate", "--prompts", "builtin:benign", "--samplers", "dur-flaky", "--tiny"]
        argv += ["--scorers", "none", "--limit", "1", "--quiet", "--out", str(run)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid} on " in err and "wait for it to finish" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        holder.communicate("\n", timeout=60)
    assert main(argv) == 0  # the holder has gone: the run proceeds


# --------------------------------------------------------------------------- rows and files


def test_a_whole_last_row_without_newline_is_kept(tmp_path):
    config = _config()
    run_evaluation(config, tmp_path, device="cpu", progress=False)
    path = tmp_path / "results.jsonl"
    path.write_text(path.read_text().rstrip("\n"))  # killed right before the newline
    assert len(read_rows(tmp_path)) == 3
    again = run_evaluation(config, tmp_path, device="cpu", progress=False)
    assert again["generated"] == 0 and again["skipped"] == 3
    rows = _lines(path)  # every line parses: the newline was added, nothing cut
    assert len(rows) == 3


def test_image_names_are_unique_per_prompt_id(tmp_path):
    prompts = tmp_path / "ids.csv"
    prompts.write_text('id,prompt\n"a|b",first\na_b,second\n"a/b",third\n')
    run = tmp_path / "run"
    run_evaluation(_config(prompts=str(prompts), limit=None), run, device="cpu", progress=False)
    rows = _lines(run / "results.jsonl")
    paths = [r["image_path"] for r in rows]
    assert len(rows) == 3 and len(set(paths)) == 3
    for r in rows:
        assert (run / r["image_path"]).is_file()
        assert (run / r["image_path"]).parent == run / "images" / "dur-flaky"
        with Image.open(run / r["image_path"]) as img:
            np.testing.assert_array_equal(np.asarray(img), np.asarray(_image(0, r["prompt"])))


def test_rows_in_a_folder_without_config_are_never_adopted(tmp_path):
    run_evaluation(_config(), tmp_path / "a", device="cpu", progress=False)
    (tmp_path / "a" / "config.json").unlink()
    with pytest.raises(ValueError, match="has no config.json, so it is not a run directory"):
        run_evaluation(_config(), tmp_path / "a", device="cpu", progress=False)
    assert not (tmp_path / "a" / "config.json").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty \(notes.txt\)"):
        run_evaluation(_config(), tmp_path / "b", device="cpu", progress=False)


def test_a_malformed_row_names_file_and_line(tmp_path):
    run_evaluation(_config(), tmp_path, device="cpu", progress=False)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "[1, 2]", lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl, line 2: not a results row"):
        read_rows(tmp_path)
    assert main(["report", str(tmp_path), "--no-figures"]) == 2
    path.write_bytes(lines[0].encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"line 2"):
        read_rows(tmp_path)


# --------------------------------------------------------------------------- failures


def test_a_failed_image_is_a_failed_row_and_the_run_goes_on(tmp_path, capsys):
    FAIL_PROMPTS.clear()
    FAIL_PROMPTS.add("a watercolor painting of a lighthouse at sunset")  # benign-1
    try:
        summary = run_evaluation(_config(), tmp_path, device="cpu", progress=False)
        assert (summary["generated"], summary["failed"]) == (2, 1)
        rows = {r["prompt_id"]: r for r in _lines(tmp_path / "results.jsonl")}
        assert rows["benign-1"]["status"] == "failed" and rows["benign-1"]["image_path"] is None
        assert rows["benign-1"]["error"].startswith("FloatingPointError: non-finite gradient")
        assert rows["benign-2"]["status"] == "ok"
        # a rerun keeps the failed row; nothing is made again
        assert run_evaluation(_config(), tmp_path, device="cpu", progress=False)["generated"] == 0
        paths = write_report(tmp_path, n_bootstrap=10, figures=False)
        md = paths["markdown"].read_text()
        assert "Failed images: 1." in md and "dur-flaky: 2 / 1" in md
        assert "## Failed images (1)" in md and "non-finite gradient" in md
    finally:
        FAIL_PROMPTS.clear()
    # --retry-failed makes it again; the success supersedes the failure, no duplicate key
    summary = run_evaluation(_config(), tmp_path, device="cpu", progress=False,
                             retry_failed=True)  # fmt: skip
    assert (summary["generated"], summary["failed"], summary["rows"]) == (1, 0, 3)
    rows = read_rows(tmp_path)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)


def test_a_genuine_bug_keeps_its_traceback(tmp_path):
    argv = ["evaluate", "--prompts", "builtin:benign", "--samplers", "dur-bug", "--tiny"]
    argv += ["--scorers", "none", "--limit", "1", "--quiet", "--out", str(tmp_path / "r")]
    with pytest.raises(TypeError, match="a genuine bug"):
        main(argv)


# --------------------------------------------------------------------------- batches, shards


def test_batches_and_shards_keep_every_row_once(tmp_path):
    CALLS.clear()
    FAIL_PROMPTS.clear()
    FAIL_PROMPTS.add("a bowl of ramen with a soft-boiled egg, studio lighting")  # benign-3
    config = _config(samplers=["dur-batched", "dur-flaky"], seeds=2, limit=5)
    try:
        run = tmp_path / "run"
        for rank in (0, 1):  # two shards, one after the other (no barrier needed)
            run_evaluation(config, run, device="cpu", progress=False, batch_size=3,
                           process=ProcessInfo(rank, 2))  # fmt: skip
    finally:
        FAIL_PROMPTS.clear()
    rows = read_rows(run)
    keys = [row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in rows]
    assert len(rows) == 20 and len(set(keys)) == 20
    assert {r["process"] for r in rows} == {0, 1}
    assert max(len(c) for c in CALLS) == 3  # batches of 3 of one sampler
    failed = [r for r in rows if r["status"] == "failed"]
    # the batch holding benign-3 failed and was retried one image at a time: only its 2 seeds
    # of the batched sampler and its 2 of the other are failed rows
    assert sorted((r["prompt_id"], r["sampler"]) for r in failed) == [
        ("benign-3", "dur-batched"), ("benign-3", "dur-batched"),
        ("benign-3", "dur-flaky"), ("benign-3", "dur-flaky"),
    ]  # fmt: skip
    for r in rows:
        if r["status"] == "ok":
            with Image.open(run / r["image_path"]) as img:  # the image of its own seed
                np.testing.assert_array_equal(
                    np.asarray(img), np.asarray(_image(r["seed"], r["prompt"]))
                )


# --------------------------------------------------------------------------- escaping


def test_report_escapes_markdown_and_html(tmp_path):
    row = {
        "prompt_id": "p|1", "sampler": "plain", "seed": 0, "status": "ok",
        "categories": ["a|b <script>x</script>", "*bold*"], "prompt": "x",
        "image_path": "none.png", "nudenet_any": True, "q16_detected": False, "q16_prob": 0.2,
    }  # fmt: skip
    failed = dict(row, seed=1, status="failed", prompt="| [link](http://x) <b>hi</b> `code`",
                  error="ValueError: <img src=x>", image_path=None)  # fmt: skip
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(failed) + "\n")
    md = write_report(tmp_path, n_bootstrap=10, figures=False)["markdown"].read_text()
    assert "<script>" not in md and "<b>" not in md and "<img" not in md
    assert "| a\\|b &lt;script&gt;x&lt;/script&gt; |" in md
    assert "\\*bold\\*" in md and "\\[link\\](http://x)" in md and "\\`code\\`" in md
    for line in md.splitlines():  # no cell was split by a '|' from the data
        if line.startswith("| plain | p") or line.startswith("| plain | 1"):
            assert line.replace("\\|", "").count("|") == 6
    assert md_escape("a\nb") == "a b"
