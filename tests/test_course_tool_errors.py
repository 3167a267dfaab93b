"""The course tool (``python -m safescore.course.assign``) on bad input: one line naming the
option or file and what is allowed, exit 2, nothing written; and on hostile submissions (an
endless loop, deleted cells): graded, not hung, not crashed.

The error tests run before nbgrader is involved (a stand-in course folder: a gradebook file and a
release notebook), so they take milliseconds. The two grading tests make a real one-notebook
course and need nbgrader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safescore.course import assign

PROG = "python -m safescore.course.assign"


def _cell(kind: str, source: str, grade_id: str | None = None, **nbgrader) -> dict:
    cell = {"cell_type": kind, "id": grade_id or "intro", "metadata": {}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    if grade_id:
        meta = {"grade_id": grade_id, "schema_version": 3, "grade": False, "solution": False}
        meta.update(locked=not nbgrader.get("solution", False), **nbgrader)
        cell["metadata"]["nbgrader"] = meta
    return cell


def tiny_notebook(double_body: str = "return 2 * x") -> dict:
    """Two exercises: ``double`` (check worth 1 point) and ``triple`` (2 points)."""
    solution = "def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION"
    cells = [
        _cell("markdown", "# A tiny course"),
        _cell("code", solution.format(name="double", body=double_body), "double", solution=True),
        _cell("code", "assert double(2) == 4", "double_check", grade=True, points=1),
        _cell("code", solution.format(name="triple", body="return 3 * x"), "triple", solution=True),
        _cell("code", "assert triple(2) == 6", "triple_check", grade=True, points=2),
    ]
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": cells,
    }


def _write(path: Path, nb: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


@pytest.fixture
def fake_course(tmp_path) -> Path:
    """A course folder as ``student`` leaves it, as far as the input checks look."""
    course = tmp_path / "course"
    _write(course / "release" / "01_tiny" / "01_tiny.ipynb", tiny_notebook())
    (course / "gradebook.db").write_bytes(b"")
    return course


def _error(argv, capsys) -> str:
    """Run the tool in-process; assert exit 2 and return its one error line."""
    with pytest.raises(SystemExit) as exc:
        assign.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- grade
@pytest.mark.parametrize("student", ["../../evil", "", ".hidden", "a/b", "a\\b", "x" * 65, ".."])
def test_grade_refuses_a_student_id_that_is_not_a_plain_name(
    fake_course, tmp_path, capsys, student
):
    sub = _write(tmp_path / "in" / "01_tiny.ipynb", tiny_notebook())
    err = _error(
        ["grade", str(sub), "--student", student, "--course-dir", str(fake_course)], capsys
    )
    assert "--student must be a plain name" in err and repr(student) in err
    assert not (fake_course / "submitted").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["course", "in"]  # nothing outside


def test_grade_refuses_a_missing_course_dir_and_does_not_create_it(tmp_path, capsys):
    sub = _write(tmp_path / "01_tiny.ipynb", tiny_notebook())
    missing = tmp_path / "no_course"
    err = _error(["grade", str(sub), "--student", "alice", "--course-dir", str(missing)], capsys)
    assert f"--course-dir: {missing} does not exist" in err and "student --course-dir" in err
    assert not missing.exists()


def test_grade_refuses_a_folder_without_gradebook(tmp_path, capsys):
    sub = _write(tmp_path / "01_tiny.ipynb", tiny_notebook())
    (tmp_path / "empty").mkdir()
    err = _error(
        ["grade", str(sub), "--student", "a", "--course-dir", str(tmp_path / "empty")], capsys
    )
    assert "has no gradebook.db" in err


def test_grade_refuses_a_missing_submission(fake_course, tmp_path, capsys):
    sub = tmp_path / "01_tiny.ipynb"
    err = _error(["grade", str(sub), "--student", "a", "--course-dir", str(fake_course)], capsys)
    assert err.endswith(f"SUBMISSION: no file {sub}")


@pytest.mark.parametrize(
    "name, content",
    [
        ("01_tiny.ipynb", "print('hello')\n"),  # a Python file renamed
        ("01_tiny.ipynb", '{"cells": "none"}'),  # JSON, not a notebook
        ("01_tiny.ipynb", "\udcff"),  # not even UTF-8
        ("01_tiny.txt", "some notes\n"),  # a text file
    ],
)
def test_grade_refuses_a_file_that_is_not_a_notebook(fake_course, tmp_path, capsys, name, content):
    sub = tmp_path / name
    sub.write_bytes(content.encode("utf-8", "surrogateescape"))
    err = _error(["grade", str(sub), "--student", "a", "--course-dir", str(fake_course)], capsys)
    assert f"SUBMISSION: {sub} is not a Jupyter notebook" in err
    assert not (fake_course / "submitted").exists()


def test_grade_refuses_a_notebook_not_named_after_an_assignment(fake_course, tmp_path, capsys):
    sub = _write(tmp_path / "homework_final.ipynb", tiny_notebook())
    err = _error(["grade", str(sub), "--student", "a", "--course-dir", str(fake_course)], capsys)
    assert "is not named after an assignment" in err and "one of: 01_tiny" in err


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "1e9"])
def test_grade_refuses_a_bad_cell_timeout(fake_course, tmp_path, capsys, value):
    sub = _write(tmp_path / "01_tiny.ipynb", tiny_notebook())
    argv = ["grade", str(sub), "--student", "a", "--course-dir", str(fake_course)]
    err = _error(argv + ["--cell-timeout", value], capsys)
    assert "--cell-timeout" in err and "[1, 86400]" in err and repr(value) in err


# --------------------------------------------------------------------------- student
def test_student_refuses_a_missing_notebooks_folder(tmp_path, capsys):
    missing = tmp_path / "nope"
    course = tmp_path / "course"
    err = _error(["student", "--course-dir", str(course), "--notebooks", str(missing)], capsys)
    assert f"--notebooks: {missing} does not exist" in err
    assert not course.exists()


def test_student_refuses_a_folder_without_notebooks(tmp_path, capsys):
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "README.md").write_text("no notebooks here\n")
    err = _error(
        ["student", "--course-dir", str(tmp_path / "c"), "--notebooks", str(tmp_path / "nbs")],
        capsys,
    )
    assert "--notebooks: no *.ipynb notebooks in" in err


def test_student_refuses_a_notebooks_folder_holding_a_non_notebook(tmp_path, capsys):
    _write(tmp_path / "nbs" / "01_tiny.ipynb", tiny_notebook())
    (tmp_path / "nbs" / "02_broken.ipynb").write_text("not json\n")
    course = tmp_path / "c"
    err = _error(
        ["student", "--course-dir", str(course), "--notebooks", str(tmp_path / "nbs")], capsys
    )
    assert "02_broken.ipynb is not a Jupyter notebook" in err
    assert not course.exists()


def test_student_refuses_a_course_dir_that_holds_something_else(tmp_path, capsys):
    _write(tmp_path / "nbs" / "01_tiny.ipynb", tiny_notebook())
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("\\chapter{}\n")
    err = _error(
        ["student", "--course-dir", str(other), "--notebooks", str(tmp_path / "nbs")], capsys
    )
    assert "is not a course folder" in err
    assert [p.name for p in other.iterdir()] == ["chapter1.tex"]


def test_student_refuses_a_course_dir_that_is_a_file(tmp_path, capsys):
    _write(tmp_path / "nbs" / "01_tiny.ipynb", tiny_notebook())
    (tmp_path / "course").write_text("x")
    err = _error(
        ["student", "--course-dir", str(tmp_path / "course"), "--notebooks", str(tmp_path / "nbs")],
        capsys,
    )
    assert "is a file, not a course folder" in err


def test_the_command_line_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "safescore.course.assign", "grade", str(tmp_path / "x.ipynb"),
         "--student", "../../evil", "--course-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc
    assert proc.stderr.strip().splitlines() == [
        f"{PROG} grade: error: --course-dir: {tmp_path} has no gradebook.db; make the course "
        f"first with `{PROG} student --course-dir {tmp_path}`"
    ]


# --------------------------------------------------------------------------- hostile submissions
@pytest.fixture(scope="session")
def tiny_course(tmp_path_factory) -> Path:
    pytest.importorskip("nbgrader")
    root = tmp_path_factory.mktemp("tiny")
    _write(root / "nbs" / "01_tiny.ipynb", tiny_notebook())
    assert assign.generate(root / "course", root / "nbs") == ["01_tiny"]
    return root / "course"


@pytest.mark.xdist_group("tiny_course")  # one tiny course, made once
def test_an_endless_loop_times_out_and_scores_0_for_its_cell_only(tiny_course, tmp_path, capsys):
    sub = _write(tmp_path / "01_tiny.ipynb", tiny_notebook("while True:\n        pass"))
    argv = ["grade", str(sub), "--student", "looper", "--course-dir", str(tiny_course)]
    assert assign.main(argv + ["--cell-timeout", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("looper 01_tiny: 2 / 3")
    executed = json.loads(
        (tiny_course / "autograded" / "looper" / "01_tiny" / "01_tiny.ipynb").read_text()
    )
    errors = {
        c["metadata"]["nbgrader"]["grade_id"]: [o["ename"] for o in c["outputs"] if "ename" in o]
        for c in executed["cells"]
        if c["cell_type"] == "code"
    }
    # Only the looping check failed: interrupted (KeyboardInterrupt), recorded as a timeout.
    assert {k: v for k, v in errors.items() if v} == {
        "double_check": ["KeyboardInterrupt", "CellTimeoutError"]
    }, errors


@pytest.mark.xdist_group("tiny_course")  # one tiny course, made once
def test_deleted_cells_are_restored_and_said_so(tiny_course, tmp_path, capsys):
    nb = tiny_notebook()
    nb["cells"] = [c for c in nb["cells"] if c["id"] not in ("triple", "double_check")]
    sub = _write(tmp_path / "01_tiny.ipynb", nb)
    argv = ["grade", str(sub), "--student", "deleter", "--course-dir", str(tiny_course)]
    assert assign.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 deleted cell(s) restored from the gradebook (double_check, triple)" in out
    # The deleted check still runs (1 point for `double`); the deleted solution is the stub (0).
    assert out.strip().endswith("deleter 01_tiny: 1 / 3")
