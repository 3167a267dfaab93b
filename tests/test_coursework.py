"""Coursework: both versions of the exercise notebooks, proven.

* the instructor notebooks (``notebooks/``) carry nbgrader solution and check cells, 2-4
  exercises each (they run with every check passing under nbval, like every notebook);
* ``nbgrader generate_assignment`` (``safescore.course.assign.generate``) makes student versions
  with no solution left;
* the student versions, executed by nbgrader's autograder in fast mode (errors allowed), fail
  every check with an ``AssertionError("Hint: ...")`` — no kernel crash, no stall (a cell
  timeout) — and score 0;
* the solutions score full points from the same autograder: under ``make test`` it grades the
  notebooks docs-build executed (from their outputs, nothing is run twice); without the built
  site, the instructor notebooks reduced to their parameters and imports cells and their
  exercises are executed and graded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("nbgrader")
pytestmark = pytest.mark.filterwarnings("ignore:Object of type <SubmittedNotebook>")

from safescore.course import assign, checks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
COURSE_NOTEBOOKS = [
    "01_score_matching",
    "02_ddpm_ddim",
    "03_guidance_and_unguidance",
    "04_conditional_trajectory_correction",
    "05_manifold_and_images",
    "06_harm_densities_clip",
    "07_stable_diffusion_safe_sampling",
    "08_i2p_evaluation",
]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _text(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_source_notebooks_have_2_to_4_checked_exercises_each():
    total = 0
    for name in COURSE_NOTEBOOKS:
        cells = _cells(NOTEBOOKS / f"{name}.ipynb")
        solutions = [c for c in cells if _nbgrader(c).get("solution")]
        graded = [c for c in cells if _nbgrader(c).get("grade")]
        assert 2 <= len(solutions) <= 4, (name, len(solutions))
        assert len(graded) == len(solutions), name
        for c in solutions:
            assert "### BEGIN SOLUTION" in _text(c) and "### END SOLUTION" in _text(c), name
        for c in graded:
            meta = _nbgrader(c)
            assert meta["locked"] and meta["points"] > 0, (name, meta)
            assert "checks.check_" in _text(c), (name, _text(c))
        ids = [_nbgrader(c)["grade_id"] for c in solutions + graded]
        assert len(set(ids)) == len(ids), (name, ids)
        total += len(solutions)
    assert total >= 12, total


def test_every_check_turns_a_stub_into_a_hint():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    for name in checks.__all__:
        with pytest.raises(AssertionError, match=r"^Hint: "):
            getattr(checks, name)(stub)


def _trimmed_instructor_version(src: Path, dest: Path) -> None:
    """The parameters and imports cells, the markdown and the exercise cells of ``src``."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    code_seen, keep = 0, []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            code_seen += 1
            if code_seen > 2 and not _nbgrader(cell):
                continue
        keep.append(cell)
    nb["cells"] = keep
    dest.write_text(json.dumps(nb), encoding="utf-8")


def _solution_free(cells: list[dict]) -> list[tuple[str, str]]:
    """(cell type, source) of every cell that is not a solution cell."""
    return [(c["cell_type"], _text(c)) for c in cells if not _nbgrader(c).get("solution")]


# The stubs are graded in the student version reduced like the solutions (parameters, imports,
# exercises); `make test-full` also grades the whole student version.
STUDENT_VERSIONS = [
    pytest.param(False, id="exercises"),
    pytest.param(True, id="whole", marks=pytest.mark.full),
]


@pytest.fixture(scope="session")
def course(tmp_path_factory) -> Path:
    """A course folder (student versions and gradebook) for every notebook: made once per run,
    under a lock in the folder pytest-xdist's workers share, and copied for each worker (each
    grades into its own gradebook)."""
    from filelock import FileLock  # a dependency of torch

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "course-made"
    with FileLock(f"{shared}.lock"):
        if not (shared / "gradebook.db").is_file():
            made = assign.generate(shared, NOTEBOOKS, names=COURSE_NOTEBOOKS)
            assert made == COURSE_NOTEBOOKS
    course = tmp_path_factory.mktemp("coursework") / "course"
    shutil.copytree(shared, course)
    return course


def _expected_points(name: str) -> float:
    return sum(_nbgrader(c).get("points", 0) for c in _cells(NOTEBOOKS / f"{name}.ipynb"))


@pytest.mark.parametrize("whole", STUDENT_VERSIONS)
@pytest.mark.parametrize("name", COURSE_NOTEBOOKS)
def test_student_version_fails_with_hints_and_scores_0(name, whole, course, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "1")  # the kernels nbgrader starts inherit it: fast mode
    monkeypatch.setattr(assign, "CELL_TIMEOUT_S", 300)  # a stalled cell fails the run
    student = course / "release" / name / f"{name}.ipynb"
    text = student.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text, name
    source_cells = _cells(NOTEBOOKS / f"{name}.ipynb")
    # Outside its solution cells the student version is the instructor's notebook cell for cell,
    # which docs-build executes in full.
    assert _solution_free(_cells(student)) == _solution_free(source_cells), name
    submission = student
    if not whole:
        submission = tmp_path / f"{name}.ipynb"
        _trimmed_instructor_version(student, submission)

    # The stubs: every check fails with its hint, and scores nothing.
    stubs = "stubs-whole" if whole else "stubs"
    score, max_score = assign.autograde(course, name, stubs, submission)
    assert (score, max_score) == (0.0, _expected_points(name)), name
    executed = _cells(course / "autograded" / stubs / name / f"{name}.ipynb")
    checked = [c for c in executed if _nbgrader(c).get("grade")]
    assert checked, name
    for cell in checked:
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        assert len(errors) == 1, (name, _text(cell), cell["outputs"])
        assert errors[0]["ename"] == "AssertionError", (name, errors[0]["ename"])
        assert errors[0]["evalue"].startswith("Hint: "), (name, errors[0]["evalue"])
    # Nothing but the stubs' consequences failed: no kernel death, no timeout.
    for cell in executed:
        for o in cell.get("outputs", []):
            if o["output_type"] == "error":
                assert o["ename"] not in ("DeadKernelError", "CellTimeoutError"), (name, o)


def _without_outputs(cells: list[dict]) -> list[tuple[str, str]]:
    return [(c["cell_type"], _text(c)) for c in cells]


@pytest.mark.parametrize("name", COURSE_NOTEBOOKS)
def test_solutions_score_full_points(name, course, executed_notebooks, tmp_path, monkeypatch):
    """The instructor's solutions get every point from the same autograder.

    Under `make test` the notebook docs-build executed (the whole instructor notebook, in fast
    mode) is graded from its outputs, and one check cell given an error output loses exactly its
    points; without the built site the reduced instructor version is executed and graded.
    """
    expected = _expected_points(name)
    if executed_notebooks is None:
        monkeypatch.setenv("CI", "1")
        solved = tmp_path / f"{name}.ipynb"
        _trimmed_instructor_version(NOTEBOOKS / f"{name}.ipynb", solved)
        assert assign.autograde(course, name, "solutions", solved) == (expected, expected)
        return

    executed = executed_notebooks / f"{name}.ipynb"
    nb = json.loads(executed.read_text(encoding="utf-8"))
    assert _without_outputs(nb["cells"]) == _without_outputs(_cells(NOTEBOOKS / f"{name}.ipynb")), (
        f"{executed} is not the current {name}: run `make docs-build`"
    )
    score = assign.autograde(course, name, "solutions", executed, execute=False)
    assert score == (expected, expected), name

    # The grade comes from the outputs: an error in the first check cell costs its points.
    first = next(c for c in nb["cells"] if _nbgrader(c).get("grade"))
    first["outputs"].append(
        {"output_type": "error", "ename": "AssertionError", "evalue": "Hint: x", "traceback": []}
    )
    broken = tmp_path / f"{name}.ipynb"
    broken.write_text(json.dumps(nb), encoding="utf-8")
    score = assign.autograde(course, name, "broken", broken, execute=False)
    assert score == (expected - _nbgrader(first)["points"], expected), name
