# nbgrader configuration of the safescore course (run nbgrader commands from this directory).
# `make student` (python -m safescore.course.assign student) uses the same settings.
from safescore.course.assign import configure

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file
configure(c)
