"""Student versions of the notebooks and their grading, with nbgrader.

The notebooks in ``notebooks/`` are the instructor (source) versions: they run top to bottom with
the solutions in place. nbgrader turns them into student versions and grades submissions:

* a **solution cell** (nbgrader metadata ``solution: true``) holds the code between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``; in the student version that region becomes
  ``# YOUR CODE HERE`` / ``raise NotImplementedError()``;
* a **check cell** (``grade: true, locked: true, points: n``) calls ``safescore.course.checks``;
  it is read-only for the student, and autograding gives its points when it runs without error.

Usage (``make student`` runs the first)::

    python -m safescore.course.assign student [--course-dir course] [--notebooks notebooks]
    python -m safescore.course.assign grade SUBMISSION.ipynb --student ID [--course-dir course]
        [--full] [--cell-timeout SECONDS]

``student`` copies every notebook to ``COURSE/source/NAME/NAME.ipynb`` and writes the student
version to ``COURSE/release/NAME/NAME.ipynb`` plus the gradebook ``COURSE/gradebook.db`` (the
checksums and points of every check cell). ``grade`` autogrades one submitted notebook (executed
in fast mode unless ``--full``) and prints its score; ``COURSE/autograded/ID/NAME/`` keeps the
executed copy. nbgrader itself (``nbgrader autograde``, ``nbgrader generate_feedback``,
formgrader) works on the same directory, configured by ``COURSE/nbgrader_config.py``.

Bad input is refused with one line naming the option or file and what is allowed (exit 2), before
anything is written: a missing or non-course ``--course-dir`` (never created by ``grade``), a
missing ``--notebooks`` folder or one without notebooks, a submission that is missing, not a
notebook or not named after an assignment, a ``--student`` that is not a plain name (letters,
digits, ``_ - .``: it becomes a folder name). ``student`` on an existing course rewrites its
source/ and release/ notebooks and keeps the gradebook and the submissions. A submission with
deleted check or solution cells is graded with them restored from the gradebook (a deleted check
still runs, a deleted solution is the stub), and the command says which. A cell that runs longer
than ``--cell-timeout`` seconds is interrupted and scores 0; the rest of the notebook still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

COURSE_ID = "safescore"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
CELL_TIMEOUT_S = 300  # per cell; fast mode runs every cell in seconds, full mode in minutes
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
COURSE_MARKERS = ("gradebook.db", "nbgrader_config.py", "source", "release")


class CourseInputError(ValueError):
    """Bad input to the course tool: the message is one line naming the option or file."""


def configure(c, course_dir: str | Path | None = None, cell_timeout: float | None = None) -> None:
    """Fill an nbgrader/traitlets config ``c`` (used by ``course/nbgrader_config.py`` too).

    Errors in a cell cost that cell's points, never the whole notebook (nbgrader's Execute allows
    errors); a cell running past ``cell_timeout`` seconds (default ``CELL_TIMEOUT_S``) is
    interrupted and scores 0. Deleted grade cells are restored from the gradebook.
    """
    c.CourseDirectory.course_id = COURSE_ID
    if course_dir is not None:
        c.CourseDirectory.root = str(Path(course_dir).resolve())
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    c.Execute.timeout = int(round(cell_timeout if cell_timeout is not None else CELL_TIMEOUT_S))
    c.Execute.interrupt_on_timeout = True
    c.Execute.raise_on_iopub_timeout = False  # a slow kernel after the interrupt: keep grading
    c.OverwriteCells.add_missing_cells = True


def _api(course_dir: Path, cell_timeout: float | None = None, execute: bool = True):
    # nbgrader calls the `alembic` command: make this interpreter's scripts directory findable
    # even when the virtual environment is not activated (Makefile, CI).
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    c = Config()
    configure(c, course_dir, cell_timeout)
    if not execute:
        # Grade the outputs the notebook already has: nbgrader's own preprocessors, less the
        # two that clear the outputs and run the notebook.
        from nbgrader.converters import Autograde
        from nbgrader.preprocessors import ClearOutput, Execute

        traits = Autograde.class_traits()
        for stage in ("sanitize_preprocessors", "autograde_preprocessors"):
            kept = [p for p in traits[stage].default() if p not in (ClearOutput, Execute)]
            setattr(c.Autograde, stage, kept)
    return NbGraderAPI(config=c)


class NbgraderFailure(RuntimeError):
    """nbgrader refused or failed: the message is its last error line; ``log`` the whole log."""

    def __init__(self, action: str, log: str):
        errors = [line.strip() for line in log.splitlines() if "ERROR" in line or "Error" in line]
        super().__init__(f"{action} failed: {errors[-1] if errors else 'see the log above'}")
        self.log = log


# --------------------------------------------------------------------------- input checks
def read_notebook(path: Path, what: str) -> dict:
    """The JSON of the Jupyter notebook at ``path``; a one-line error if it is not one."""
    if not path.exists():
        raise CourseInputError(f"{what}: no file {path}")
    if not path.is_file():
        raise CourseInputError(f"{what}: {path} is not a file (give a NAME.ipynb notebook)")
    if path.suffix != ".ipynb":
        raise CourseInputError(f"{what}: {path} is not a Jupyter notebook (a NAME.ipynb file)")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CourseInputError(
            f"{what}: {path} is not a Jupyter notebook (not JSON: {err})"
        ) from None
    if not (isinstance(nb, dict) and isinstance(nb.get("cells"), list) and nb.get("nbformat") == 4):
        raise CourseInputError(
            f"{what}: {path} is not a Jupyter notebook (nbformat 4 JSON with a 'cells' list)"
        )
    return nb


def check_student_id(student: str) -> str:
    """A student id is a folder name under the course: a plain name, never a path."""
    if not isinstance(student, str) or not SAFE_NAME.fullmatch(student):
        raise CourseInputError(
            f"--student must be a plain name of 1-64 letters, digits, '_', '-' or '.', starting "
            f"with a letter or digit (it names a folder in the course), got {student!r}"
        )
    return student


def check_course_dir(course_dir: Path, *, for_grading: bool) -> Path:
    """``--course-dir``: for grading, an existing course (with its gradebook); for ``student``, a
    course, an empty folder or a new path (never a folder holding something else)."""
    if course_dir.exists() and not course_dir.is_dir():
        raise CourseInputError(f"--course-dir: {course_dir} is a file, not a course folder")
    if for_grading:
        if not (course_dir / "gradebook.db").is_file():
            missing = "does not exist" if not course_dir.exists() else "has no gradebook.db"
            raise CourseInputError(
                f"--course-dir: {course_dir} {missing}; make the course first with "
                f"`python -m safescore.course.assign student --course-dir {course_dir}`"
            )
        return course_dir
    if course_dir.exists() and any(course_dir.iterdir()):
        if not any((course_dir / m).exists() for m in COURSE_MARKERS):
            raise CourseInputError(
                f"--course-dir: {course_dir} holds other files and is not a course folder (no "
                f"{', '.join(COURSE_MARKERS)}); give a new folder, an empty one or a course"
            )
    return course_dir


def check_notebooks(notebooks_dir: Path, names=None) -> list[Path]:
    """``--notebooks``: an existing folder whose NAME.ipynb files are all notebooks."""
    if not notebooks_dir.is_dir():
        missing = "is a file" if notebooks_dir.exists() else "does not exist"
        raise CourseInputError(
            f"--notebooks: {notebooks_dir} {missing}; give the folder holding the instructor "
            "notebooks (NAME.ipynb)"
        )
    paths = sorted(notebooks_dir.glob("*.ipynb"))
    if names is not None:
        paths = [notebooks_dir / f"{n}.ipynb" for n in names]
    if not paths:
        raise CourseInputError(f"--notebooks: no *.ipynb notebooks in {notebooks_dir}")
    for path in paths:
        name = path.stem
        if not SAFE_NAME.fullmatch(name):
            raise CourseInputError(
                f"--notebooks: {path} cannot be an assignment: its name must be letters, digits, "
                "'_', '-' or '.'"
            )
        read_notebook(path, "--notebooks")
    return paths


def assignments(course_dir: Path) -> list[str]:
    """The assignments of a course: the names under ``release/``."""
    release = course_dir / "release"
    return sorted(p.name for p in release.iterdir() if p.is_dir()) if release.is_dir() else []


def _grade_ids(nb: dict) -> list[str]:
    ids = []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell, dict) else {}
        if isinstance(meta, dict) and (meta.get("grade") or meta.get("solution")):
            ids.append(meta.get("grade_id"))
    return ids


def check_submission(course_dir: Path, notebook: Path) -> tuple[str, list[str]]:
    """The assignment a submission belongs to (its file name) and the ids of the graded or
    solution cells it lacks (deleted by the student; restored from the gradebook)."""
    nb = read_notebook(notebook, "SUBMISSION")
    name, known = notebook.stem, assignments(course_dir)
    if name not in known:
        raise CourseInputError(
            f"SUBMISSION: {notebook} is not named after an assignment of {course_dir}; name it "
            f"NAME.ipynb with NAME one of: {', '.join(known) or '(none: run student first)'}"
        )
    release = course_dir / "release" / name / f"{name}.ipynb"
    expected = _grade_ids(read_notebook(release, "course")) if release.is_file() else []
    present = set(_grade_ids(nb))
    return name, [i for i in expected if i not in present]


# --------------------------------------------------------------------------- the two jobs
def generate(course_dir, notebooks_dir="notebooks", names=None) -> list[str]:
    """Write the student versions of ``notebooks_dir/*.ipynb`` (or of ``names``) into
    ``course_dir/release/`` and register their check cells in ``course_dir/gradebook.db``.

    Returns the assignment names (one per notebook, its file stem).
    """
    course_dir, notebooks_dir = Path(course_dir), Path(notebooks_dir)
    check_course_dir(course_dir, for_grading=False)
    paths = check_notebooks(notebooks_dir, names)
    api = _api(course_dir)
    done = []
    for path in paths:
        name = path.stem
        source = course_dir / "source" / name
        source.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source / path.name)
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise NbgraderFailure(f"nbgrader generate_assignment {name}", result["log"])
        done.append(name)
    return done


def autograde(
    course_dir,
    assignment: str,
    student: str,
    notebook,
    cell_timeout: float | None = None,
    *,
    execute: bool = True,
) -> tuple[float, float]:
    """Autograde one submitted notebook; returns (score, max_score).

    The notebook is copied to ``course_dir/submitted/STUDENT/ASSIGNMENT/`` and executed by
    nbgrader (errors allowed, each cell interrupted after ``cell_timeout`` seconds); the executed
    copy is ``course_dir/autograded/STUDENT/ASSIGNMENT/``.

    ``execute=False`` grades the outputs the notebook already has instead of running it: only
    for a notebook you executed yourself (e.g. the instructor's, executed by ``make
    docs-build``), never for a student's submission, whose outputs could be typed in.
    """
    course_dir = Path(course_dir)
    check_student_id(student)
    dest = course_dir / "submitted" / student / assignment
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, dest / f"{assignment}.ipynb")
    api = _api(course_dir, cell_timeout, execute=execute)
    result = api.autograde(assignment, student, force=True, create=True)
    if not result["success"]:
        raise NbgraderFailure(f"nbgrader autograde {assignment} {student}", result["log"])
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url, COURSE_ID) as gb:
        submission = gb.find_submission(assignment, student)
        return float(submission.score), float(submission.max_score)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds in [1, 86400], got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's error policy: one line naming the problem, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    parser = OneLineParser(
        prog="python -m safescore.course.assign", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("student", help="write the student notebooks and the gradebook")
    p.add_argument("--course-dir", default="course", help="a course, an empty or a new folder")
    p.add_argument("--notebooks", default="notebooks", help="the instructor notebooks' folder")
    g = sub.add_parser("grade", help="autograde one submitted notebook")
    g.add_argument("notebook", help="the submitted NAME.ipynb (NAME = the assignment)")
    g.add_argument("--student", required=True, help="the student's id: letters, digits, _ - .")
    g.add_argument("--course-dir", default="course", help="the course made by `student`")
    g.add_argument("--full", action="store_true", help="execute in full mode (default: fast)")
    g.add_argument(
        "--cell-timeout", type=_seconds, default=CELL_TIMEOUT_S, metavar="SECONDS",
        help=f"interrupt a cell after this long; it scores 0 (default {CELL_TIMEOUT_S})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except CourseInputError as err:
        parser.exit(2, f"{parser.prog} {args.command}: error: {err}\n")
    except NbgraderFailure as err:
        sys.stderr.write(err.log.rstrip() + "\n")
        parser.exit(2, f"{parser.prog} {args.command}: error: {err}\n")


def _run(args) -> int:
    if args.command == "student":
        names = generate(args.course_dir, args.notebooks)
        release = Path(args.course_dir) / "release"
        print(f"student notebooks: {release}/<name>/<name>.ipynb for {len(names)} notebooks")
        print(f"gradebook: {Path(args.course_dir) / 'gradebook.db'}")
        return 0
    course_dir = check_course_dir(Path(args.course_dir), for_grading=True)
    student = check_student_id(args.student)
    name, deleted = check_submission(course_dir, Path(args.notebook))
    if deleted:
        print(
            f"{args.notebook}: {len(deleted)} deleted cell(s) restored from the gradebook "
            f"({', '.join(map(str, deleted))}): a deleted check still runs, a deleted solution "
            "is the stub"
        )
    if not args.full:
        os.environ.setdefault("SAFESCORE_FAST", "1")
    score, max_score = autograde(course_dir, name, student, args.notebook, args.cell_timeout)
    print(f"{student} {name}: {score:g} / {max_score:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
