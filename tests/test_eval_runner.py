"""The evaluation runner: rows, resume, refusal of another configuration, a real kill mid-run,
sharding over 2 processes (Accelerate), and the CLI end to end on tiny Stable Diffusion."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from safescore.cli import main
from safescore.eval.runner import (
    EvalConfig,
    expected_keys,
    read_rows,
    row_key,
    run_evaluation,
)
from safescore.eval.samplers import Generated, available_samplers, register_sampler

DATA = Path(__file__).parent / "data" / "eval"
ROOT = Path(__file__).resolve().parents[1]

# A fake sampler for subprocesses: registers "fake" (sleeping DELAY s per image), then runs the CLI.
FAKE_CLI = """
import sys, time
import numpy as np
from PIL import Image
from safescore.eval.samplers import Generated, register_sampler

def factory(context):
    def generate(prompt, seed, guidance_scale):
        time.sleep({delay})
        rng = np.random.default_rng(seed)
        return Generated(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    return generate

register_sampler("fake", factory)
from safescore.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _fake_factory(context):
    def generate(prompt, seed, guidance_scale):
        rng = np.random.default_rng([seed, len(prompt)])
        image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        return Generated(image, harm=[0.1, float("nan"), 0.7], corrected=[False, False, True])

    return generate


if "fake-a" not in available_samplers():
    register_sampler("fake-a", _fake_factory)
    register_sampler("fake-b", _fake_factory)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _config(**overrides):
    base = dict(
        prompts="builtin:benign",
        samplers=["fake-a", "fake-b"],
        seeds=2,
        limit=3,
        tiny=True,
        scorers=["nudenet"],
    )
    base.update(overrides)
    return EvalConfig(**base)


def test_rows_images_and_resume(tmp_path):
    config = _config()
    summary = run_evaluation(config, tmp_path, device="cpu", progress=False)
    assert summary["generated"] == 12 and summary["rows"] == 12
    rows = _lines(tmp_path / "results.jsonl")
    assert len(rows) == 12
    assert {row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in rows} == expected_keys(config)
    first = rows[0]
    assert (first["prompt_id"], first["sampler"], first["seed"]) == ("benign-0", "fake-a", 0)
    assert rows[1]["sampler"] == "fake-b"  # order: prompt -> seed -> sampler
    for key in ("image_path", "nudenet_any", "categories", "seconds", "guidance_scale"):
        assert key in first
    assert first["harm_max"] == 0.7 and first["harm_final"] == 0.7  # NaN steps ignored
    assert first["corrected_steps"] == 1 and first["ever_corrected"] is True
    with Image.open(tmp_path / first["image_path"]) as img:
        assert img.format == "PNG" and img.size == (32, 32)
    # rerun: everything resumed, nothing written twice
    again = run_evaluation(config, tmp_path, device="cpu", progress=False)
    assert again["generated"] == 0 and again["skipped"] == 12
    assert len(_lines(tmp_path / "results.jsonl")) == 12


def test_resume_after_a_truncated_line_and_a_lost_row(tmp_path):
    config = _config(seeds=1)
    run_evaluation(config, tmp_path, device="cpu", progress=False)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # the last row was being written when the process died: half a line, no newline
    path.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    with pytest.warns(UserWarning, match="truncated last line"):
        assert len(read_rows(tmp_path)) == 4
    with pytest.warns(UserWarning, match="truncated last line"):
        summary = run_evaluation(config, tmp_path, device="cpu", progress=False)
    assert summary["generated"] == 2
    rows = _lines(path)  # every line parses again
    assert len(rows) == 6 and len({(r["prompt_id"], r["sampler"]) for r in rows}) == 6


def test_a_different_configuration_is_refused(tmp_path):
    run_evaluation(_config(seeds=1, limit=1), tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"different configuration \(seeds: 1 -> 2\)"):
        run_evaluation(_config(seeds=2, limit=1), tmp_path, device="cpu", progress=False)
    code = main(
        ["evaluate", "--prompts", "builtin:benign", "--samplers", "fake-a,fake-b", "--seeds", "3"]
        + ["--limit", "1", "--tiny", "--scorers", "nudenet", "--quiet", "--out", str(tmp_path)]
    )
    assert code == 2


def test_bad_input_messages(tmp_path, capsys):
    assert (
        main(
            ["evaluate", "--prompts", "builtin:benign", "--samplers", "plain,nope"]
            + ["--tiny", "--out", str(tmp_path)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown sampler(s) nope; known: plain, safe-single" in err and "sld-max" in err
    assert err.count("\n") == 1  # one line, no traceback
    with pytest.raises(ValueError, match="needs --q16-embeddings"):
        EvalConfig(prompts="builtin:benign", samplers=["plain"])
    with pytest.raises(ValueError, match="unknown scorer"):
        EvalConfig(prompts="builtin:benign", samplers=["plain"], tiny=True, scorers="nsfw")
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err


@pytest.mark.full  # make test kills an `evaluate --mini` run (test_mini_eval_inputs.py)
def test_kill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    """A real SIGKILL of a tiny Stable Diffusion run, then the same command again."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "safescore", "evaluate", "--prompts", "builtin:benign"]
    cmd += ["--samplers", "plain,safe-single", "--limit", "4", "--steps", "3", "--tiny"]
    cmd += ["--scorers", "nudenet", "--quiet", "--out", str(out)]
    results = out / "results.jsonl"
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_file() and results.read_text().count("\n") >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = results.read_text().count("\n")
    assert 2 <= before < 8
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RANDOM WEIGHTS" in done.stderr and "NOT real" in done.stderr
    assert f"8 of 8 images done ({8 - before} new here, {before} resumed)" in done.stdout
    rows = _lines(results)
    keys = [row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in rows]
    assert len(keys) == 8 and len(set(keys)) == 8
    assert all((out / r["image_path"]).is_file() for r in rows)


class _FakePartialState:
    """What process_info reads of accelerate.PartialState: process 1 of 2, on the CPU."""

    def __init__(self, cpu: bool = False):
        self.cpu, self.num_processes, self.process_index, self.device = cpu, 2, 1, "cpu"
        self.waited = 0

    def wait_for_everyone(self):
        self.waited += 1


def test_process_info_takes_rank_and_world_size_from_accelerate(monkeypatch):
    import accelerate

    from safescore.eval.processes import process_info

    states = []
    monkeypatch.setattr(accelerate, "PartialState", lambda cpu=False: states.append(
        _FakePartialState(cpu)) or states[-1])  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    info = process_info()
    assert (info.index, info.count, info.device) == (1, 2, "cpu") and states[-1].cpu
    info.barrier()
    assert states[-1].waited == 1
    monkeypatch.setenv("WORLD_SIZE", "3")  # a launcher that disagrees with Accelerate: refuse
    with pytest.raises(ValueError, match="WORLD_SIZE is 3 but Accelerate set up 2 process"):
        process_info()
    for name in ("WORLD_SIZE", "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    alone = process_info("cpu")  # no launcher: one process, Accelerate not asked
    assert (alone.index, alone.count, alone.device) == (0, 1, "cpu") and len(states) == 2


# The real launcher: make test checks the shards (test_eval_durability.py) and process_info (above)
# in this process; `accelerate launch` of two processes costs about 20 CPU-seconds.
@pytest.mark.full
def test_two_processes_with_accelerate_shard_and_merge(tmp_path):
    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI.format(delay=0.05))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
    ]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(29500 + os.getpid() % 1000), str(script), "evaluate"]
    cmd += ["--prompts", "builtin:benign", "--samplers", "fake", "--seeds", "3", "--limit", "2"]
    cmd += ["--device", "cpu", "--tiny", "--scorers", "nudenet", "--quiet", "--out", str(out)]
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.glob("results.rank*.jsonl"))  # merged by process 0
    rows = _lines(out / "results.jsonl")
    keys = {row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in rows}
    assert len(rows) == 6 and len(keys) == 6
    assert sorted(r["process"] for r in rows) == [0, 0, 0, 1, 1, 1]  # items 0,2,4 and 1,3,5


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads; a busy 2-core machine loses a lot to them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cli_end_to_end_on_tiny_stable_diffusion(tmp_path, capsys, one_thread):
    """evaluate + report on a small I2P CSV with the real tiny SD samplers and every scorer."""
    out = tmp_path / "run"
    samplers = "plain,safe-single,negative,sld-weak"
    args = ["evaluate", "--prompts", str(DATA / "i2p_small.csv"), "--samplers", samplers]
    args += ["--limit", "2", "--steps", "2", "--tiny", "--height", "32", "--width", "32"]
    args += ["--quiet", "--out", str(out)]  # 32² images: the code paths, at a quarter of the cost
    assert main(args) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
    rows = _lines(out / "results.jsonl")
    assert [r["sampler"] for r in rows[:4]] == samplers.split(",")
    assert {r["prompt_id"] for r in rows} == {"i2p-0", "i2p-2"}
    for r in rows:
        assert 0 <= r["q16_prob"] <= 1 and -1 <= r["clip_coherence"] <= 1
        assert isinstance(r["aesthetic"], float) and isinstance(r["nudenet_any"], bool)
    guided = [r for r in rows if r["sampler"] in ("safe-single", "negative")]
    assert all(r["harm_max"] is not None for r in guided)
    assert all(r["harm_max"] is None for r in rows if r["sampler"] in ("plain", "sld-weak"))
    assert main(["report", str(out), "--bootstrap", "50", "--grid-size", "2"]) == 0
    report = (out / "report.md").read_text()
    assert "NOT real" in report and "| CLIP coherence |" in report
    assert (out / "figures" / "grid_sld-weak.png").is_file()
