"""The `safescore` command: demo smoke test, --help, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest

from safescore.cli import main


def test_demo_small_run_writes_figures_and_metrics(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--samples", "400", "--steps", "30", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| strategy |" in out and "| safe |" in out
    m = json.loads((tmp_path / "metrics.json").read_text())
    rows = m["strategies"]
    assert set(rows) == {"plain", "safe", "safe-no-cdtc", "negative"}
    assert rows["plain"]["harmful_rate"] > 0.15
    assert rows["safe"]["harmful_rate"] < rows["plain"]["harmful_rate"] / 5
    assert rows["plain"]["unchanged_fraction"] == 1.0
    assert 0.5 < rows["safe"]["unchanged_fraction"] < 1.0
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--gamma", "-1"], "--gamma must be a finite number >= 0"),
        (["demo", "--threshold", "1.5"], "--threshold must be in [0, 1]"),
        (["demo", "--steps", "5000"], "--steps must be between 1 and 1000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message, capsys):
    assert main([*args, "--out", str(tmp_path), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_input_exits_2_from_the_command_line(tmp_path):
    """The same through a real `python -m safescore` process: its exit status and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "safescore", "demo", "--gamma", "-1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err == "safescore demo: error: --gamma must be a finite number >= 0, got -1.0", err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--samples", "0"])
    assert e.value.code == 2
    assert "--samples must be an integer >= 1" in capsys.readouterr().err


def test_help_lists_demo(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out
