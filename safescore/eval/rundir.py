"""The run directory's files, written so that nothing finished is lost or duplicated.

Layout::

    RUN_DIR/config.json            the run's configuration (a resume must match it)
    RUN_DIR/.evaluate.lock         held (``fcntl.flock``) while an ``evaluate`` writes here
    RUN_DIR/results.jsonl          one JSON object per finished image (the merged results)
    RUN_DIR/results.rank{K}.jsonl  process K's shard while a multi-process run is going on

`RunLock` (one writer per folder), `check_or_save_config` (a resume must match),
`read_rows` / `append_row` / `merge_shards` (rows appended with fsync, torn last lines cut,
one row per key). The guarantees are listed in `safescore.eval.runner`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

from .run_config import EvalConfig
from .work import expected_keys, row_key

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"
LOCK_FILE = ".evaluate.lock"
#: Keys every results row has.
ROW_KEYS = ("prompt_id", "sampler", "seed")


class RunLockedError(OSError):
    """The run directory is locked by another ``evaluate`` (an expected failure)."""


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.evaluate.lock`` naming its holder.

    The holder writes ``{"pid", "host", "started", "command"}`` into the file; a second process
    that cannot take the lock reads it for its error message. The operating system releases the
    lock when the holder's process ends (also on a kill), so a stale file never blocks a run.
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process (it has not written its name yet)"
        return (
            f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}: "
            f"{info.get('command')}"
        )

    def acquire(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by another `safescore evaluate` "
                f"({self.holder()}); wait for it to finish, or choose another --out"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _run_contents(run_dir: Path) -> list[str]:
    """Entries of a folder that would belong to a run (hidden lock/temp files left out)."""
    return sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))


def check_or_save_config(run_dir: Path, saved: dict) -> None:
    """Save ``saved`` as ``config.json``, or refuse if the directory holds another configuration.

    A folder without ``config.json`` must be empty (rows there cannot be matched to a
    configuration, so they are never adopted).
    """
    path = run_dir / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{path} is not valid JSON ({exc}); remove it or use a new --out"
            ) from None
        if old != saved:
            diffs = [
                f"{k}: {old.get(k)!r} -> {saved.get(k)!r}"
                for k in sorted(set(old) | set(saved))
                if old.get(k) != saved.get(k)
            ]
            raise ValueError(
                f"{run_dir} holds a run with a different configuration ({'; '.join(diffs)}); "
                "rerun with the saved options to resume, or choose a new --out directory"
            )
        return
    contents = _run_contents(run_dir)
    if contents:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise ValueError(
            f"--out {run_dir} is not empty ({shown}) and has no {CONFIG_FILE}, so it is not a "
            "run directory (results there cannot be matched to a configuration and are never "
            "adopted); choose an empty or new folder"
        )
    _write_atomic(path, json.dumps(saved, indent=2, sort_keys=True) + "\n")


def result_files(run_dir: Path) -> list[Path]:
    """``results.jsonl`` then the shards ``results.rank*.jsonl`` (sorted)."""
    run_dir = Path(run_dir)
    files = [run_dir / RESULTS_FILE] if (run_dir / RESULTS_FILE).is_file() else []
    return files + sorted(run_dir.glob("results.rank*.jsonl"))


def parse_row(line: bytes | str):
    """A results row (dict with prompt_id, sampler, seed) from one line, or None if it is not."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(row, dict) or any(k not in row for k in ROW_KEYS):
        return None
    if isinstance(row["seed"], bool) or not isinstance(row["seed"], int):
        return None
    return row


def is_failed(row: dict) -> bool:
    return row.get("status") == "failed"


def read_rows(run_dir: Path) -> list[dict]:
    """Every row of a run, merged over the results files, one per key.

    Per key the first successful row wins; a key with only failed rows keeps its last one.
    A last line without its newline that does not parse (a process killed while writing) is
    skipped with a warning; a malformed line anywhere else is a ValueError naming file and line.
    """
    rows: dict[str, dict] = {}
    for path in result_files(run_dir):
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = parse_row(line)
            if row is None:
                if number == len(lines):  # last line without newline: cut off by a kill
                    warnings.warn(f"{path}: ignoring a truncated last line", stacklevel=2)
                    continue
                raise ValueError(
                    f"{path}, line {number}: not a results row (a JSON object with "
                    f"{', '.join(ROW_KEYS)}); fix or remove that line"
                )
            key = row_key(row["prompt_id"], row["sampler"], row["seed"])
            old = rows.get(key)
            if old is None or is_failed(old):
                rows[key] = row
    return list(rows.values())


def open_for_append(path: Path):
    """Open a results file for appending. A last line without its newline is completed if it is
    a whole row, and cut off if it is torn (a killed write)."""
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            if parse_row(data[cut:]) is not None:
                with path.open("ab") as handle:
                    handle.write(b"\n")
            else:
                with path.open("r+b") as handle:
                    handle.truncate(cut)
    return path.open("a", encoding="utf-8")


def append_row(handle, row: dict) -> None:
    handle.write(json.dumps(row, sort_keys=True) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def merge_shards(run_dir: Path) -> int:
    """Merge every results file into ``results.jsonl`` (atomic) and delete the shards.

    Returns the number of rows. Safe to repeat: rows are de-duplicated by key.
    """
    run_dir = Path(run_dir)
    shards = sorted(run_dir.glob("results.rank*.jsonl"))
    rows = read_rows(run_dir)
    if shards:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        tmp = run_dir / f".{RESULTS_FILE}.merge.tmp"
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, run_dir / RESULTS_FILE)
        for shard in shards:
            shard.unlink()
    return len(rows)


def missing_keys(run_dir, config: EvalConfig) -> Iterable[str]:
    have = {row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in read_rows(Path(run_dir))}
    return sorted(expected_keys(config) - have)
