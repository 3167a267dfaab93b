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

``student`` copies every notebook to ``COURSE/source/NAME/NAME.ipynb`` and writes the student
version to ``COURSE/release/NAME/NAME.ipynb`` plus the gradebook ``COURSE/gradebook.db`` (the
checksums and points of every check cell). ``grade`` autogrades one submitted notebook (executed
in fast mode unless ``--full``) and prints its score; ``COURSE/autograded/ID/NAME/`` keeps the
executed copy. nbgrader itself (``nbgrader autograde``, ``nbgrader generate_feedback``,
formgrader) works on the same directory, configured by ``COURSE/nbgrader_config.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

COURSE_ID = "safescore"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
CELL_TIMEOUT_S = 600


def configure(c, course_dir: str | Path | None = None) -> None:
    """Fill an nbgrader/traitlets config ``c`` (used by ``course/nbgrader_config.py`` too)."""
    c.CourseDirectory.course_id = COURSE_ID
    if course_dir is not None:
        c.CourseDirectory.root = str(Path(course_dir).resolve())
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    c.Execute.timeout = CELL_TIMEOUT_S
    c.Execute.allow_errors = True  # a failing check costs its points, never the whole notebook


def _api(course_dir: Path):
    # nbgrader calls the `alembic` command: make this interpreter's scripts directory findable
    # even when the virtual environment is not activated (Makefile, CI).
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    c = Config()
    configure(c, course_dir)
    return NbGraderAPI(config=c)


def generate(course_dir, notebooks_dir="notebooks", names=None) -> list[str]:
    """Write the student versions of ``notebooks_dir/*.ipynb`` (or of ``names``) into
    ``course_dir/release/`` and register their check cells in ``course_dir/gradebook.db``.

    Returns the assignment names (one per notebook, its file stem).
    """
    course_dir, notebooks_dir = Path(course_dir), Path(notebooks_dir)
    paths = sorted(notebooks_dir.glob("*.ipynb"))
    if names is not None:
        paths = [notebooks_dir / f"{n}.ipynb" for n in names]
    if not paths:
        raise FileNotFoundError(f"no notebooks in {notebooks_dir}")
    api = _api(course_dir)
    done = []
    for path in paths:
        name = path.stem
        source = course_dir / "source" / name
        source.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source / path.name)
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{result['log']}")
        done.append(name)
    return done


def autograde(course_dir, assignment: str, student: str, notebook) -> tuple[float, float]:
    """Autograde one submitted notebook; returns (score, max_score).

    The notebook is copied to ``course_dir/submitted/STUDENT/ASSIGNMENT/`` and executed by
    nbgrader (errors allowed); the executed copy is ``course_dir/autograded/STUDENT/ASSIGNMENT/``.
    """
    course_dir = Path(course_dir)
    dest = course_dir / "submitted" / student / assignment
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, dest / f"{assignment}.ipynb")
    api = _api(course_dir)
    result = api.autograde(assignment, student, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader autograde {assignment} {student} failed:\n{result['log']}")
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url, COURSE_ID) as gb:
        submission = gb.find_submission(assignment, student)
        return float(submission.score), float(submission.max_score)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m safescore.course.assign", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("student", help="write the student notebooks and the gradebook")
    p.add_argument("--course-dir", default="course")
    p.add_argument("--notebooks", default="notebooks")
    g = sub.add_parser("grade", help="autograde one submitted notebook")
    g.add_argument("notebook", help="the submitted NAME.ipynb (NAME = the assignment)")
    g.add_argument("--student", required=True)
    g.add_argument("--course-dir", default="course")
    g.add_argument("--full", action="store_true", help="execute in full mode (default: fast)")
    args = parser.parse_args(argv)
    if args.command == "student":
        names = generate(args.course_dir, args.notebooks)
        release = Path(args.course_dir) / "release"
        print(f"student notebooks: {release}/<name>/<name>.ipynb for {len(names)} notebooks")
        print(f"gradebook: {Path(args.course_dir) / 'gradebook.db'}")
        return 0
    if not args.full:
        os.environ.setdefault("SAFESCORE_FAST", "1")
    name = Path(args.notebook).stem
    score, max_score = autograde(args.course_dir, name, args.student, args.notebook)
    print(f"{args.student} {name}: {score:g} / {max_score:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
