"""Coursework helpers: the automatic checks behind the notebooks' exercises.

``safescore.course.checks`` holds one ``check_*`` function per exercise. Each runs the student's
function on random inputs, compares it with a reference (the library or a closed form) and, on a
wrong answer, raises ``AssertionError("Hint: ...")`` naming the likely mistake. See
``docs/coursework.md`` for how the course is run, handed out and graded.
"""
