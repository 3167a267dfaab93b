"""``evaluate --mini`` takes the given γ, η and protocol for safe-single and negative (the mini
model's tuned values where none is given), records the values it used, and survives a kill -9
mid-run: the rerun finishes the run with no row lost or duplicated (issue 19, issue 17 item 2)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from safescore.cli.main import main  # noqa: E402
from safescore.eval.runner import EvalConfig, read_rows  # noqa: E402
from safescore.eval.samplers import SamplerContext  # noqa: E402
from safescore.sd import mini  # noqa: E402

STEPS = 6
RUN = ["evaluate", "--mini", "--limit", "1", "--steps", str(STEPS), "--scorers", "digit"]
RUN += ["--samplers", "plain,safe-single", "--quiet"]


def _guidance(config):
    context = SamplerContext.from_config(config, device="cpu", dtype=torch.float32)
    guidance = context.guidance("single")
    # the mini model's γ is the scale of its schedule γ_t = γ·√ᾱ_t (mini.safe_gamma)
    assert guidance.gamma == mini.safe_gamma(guidance.gamma.gamma)
    return guidance.gamma.gamma, guidance.threshold


def test_the_mini_guidance_takes_the_configured_gamma_and_threshold():
    default = EvalConfig.from_protocol(mini=True)
    assert _guidance(default) == (mini.SAFE_GAMMA, mini.SAFE_THRESHOLD)
    # "not given" is recorded as the tuned values the run used
    recorded = default.to_dict()
    assert (recorded["gamma"], recorded["threshold"]) == (mini.SAFE_GAMMA, mini.SAFE_THRESHOLD)
    assert recorded["negative_gamma"] == mini.NEGATIVE_GAMMA
    given = EvalConfig.from_protocol(mini=True, gamma=20.0, threshold=0.9)
    assert _guidance(given) == (20.0, 0.9)
    thesis = EvalConfig.from_protocol("thesis", mini=True)
    assert _guidance(thesis) == (75.0, 0.23)


def _pixels(run, row):
    return np.asarray(Image.open(run / row["image_path"]), dtype=np.int16)


def test_threshold_1_never_corrects_and_gamma_0_changes_nothing(tmp_path):
    never = tmp_path / "threshold-1"
    assert main(RUN + ["--threshold", "1.0", "--out", str(never)]) == 0
    safe = [r for r in read_rows(never) if r["sampler"] == "safe-single"]
    assert safe and not any(r["ever_corrected"] for r in safe)
    assert json.loads((never / "config.json").read_text())["threshold"] == 1.0
    assert "threshold = 1.0" in _report(never)

    still = tmp_path / "gamma-0"
    assert main(RUN + ["--gamma", "0", "--out", str(still)]) == 0
    rows = {r["sampler"]: r for r in read_rows(still)}
    assert rows["safe-single"]["digit"] == rows["plain"]["digit"]  # γ 0 moves nothing
    diff = np.abs(_pixels(still, rows["safe-single"]) - _pixels(still, rows["plain"])).max()
    assert diff <= 1


def _report(run):
    assert main(["report", str(run), "--no-figures", "--bootstrap", "10"]) == 0
    return (run / "report.md").read_text()


def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    run = tmp_path / "run"
    argv = ["evaluate", "--mini", "--limit", "2", "--seeds", "2", "--steps", "4"]
    argv += ["--samplers", "plain,safe-single", "--scorers", "digit", "--quiet", "--out", str(run)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "safescore", *argv], env=env)
    results = run / "results.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_file() and results.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = len(read_rows(run))
    assert 1 <= before < 8
    assert main(argv) == 0  # the same command resumes
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    keys = [(r["prompt_id"], r["sampler"], r["seed"]) for r in lines]
    assert len(keys) == len(set(keys)) == 8  # every image once: none lost, none written twice
    assert all(r["status"] == "ok" for r in lines)
    assert all((run / r["image_path"]).is_file() for r in lines)
