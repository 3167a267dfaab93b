#!/usr/bin/env bash
# The stages of `make test` (run by the Makefile with BIN and MAKE set), each timed:
#   lint        ruff check + ruff format --check (stops here when it fails)
#   docs-build  the notebooks executed in fast mode, then the strict site build (make -j2
#               docs-build), in the background; its output goes to build/docs-build.log
#   pytest      the whole suite on 2 xdist workers, alongside docs-build; the tests that need
#               the built site (the browser test) are scheduled last and wait for it
# Exits non-zero when any stage failed. Arguments replace pytest's default `tests` (e.g. one
# file); `make test-full` sets SAFESCORE_TEST_FULL=1 for the slow variations.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
MAKE=${MAKE:-make}
WORKERS=${PYTEST_WORKERS:-2}
now() { date +%s; }

start=$(now)
"$BIN/ruff" check . && "$BIN/ruff" format --check .
lint_rc=$?
lint_s=$(($(now) - start))
if [ "$lint_rc" != 0 ]; then
    echo "stage lint $lint_s s: FAILED (ruff; \`make lint\` fixes what it can)"
    exit "$lint_rc"
fi

mkdir -p build
done_file=build/docs-build.done
rm -f "$done_file"
# In its own process group (setsid), so that an interrupt can stop the whole build.
setsid=$(command -v setsid >/dev/null && echo "setsid -w" || true)
$setsid bash -c '
    t=$(date +%s)
    $1 --no-print-directory -j2 docs-build >build/docs-build.log 2>&1
    rc=$?
    echo "$rc $(($(date +%s) - t))" >"$0.tmp" && mv "$0.tmp" "$0"
' "$done_file" "$MAKE" &
docs_pid=$!
trap '[ -n "$setsid" ] && kill -TERM -- "-$docs_pid" 2>/dev/null; kill "$docs_pid" 2>/dev/null; exit 130' INT TERM

t=$(now)
# One thread per process (the tests' models are tiny; on 2 shared cores the threads of one
# process only busy-wait for those of another), in the workers and every process they start.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} CI=${CI:-1} TRANSFORMERS_VERBOSITY=error \
    SAFESCORE_SITE=build/site SAFESCORE_SITE_DONE=$done_file \
    "$BIN/python" -m pytest -n "$WORKERS" --dist loadgroup -p no:cacheprovider "${@:-tests}"
pytest_rc=$?
pytest_s=$(($(now) - t))

wait "$docs_pid"
trap - INT TERM
read -r docs_rc docs_s <"$done_file" || { docs_rc=1; docs_s=0; }
if [ "$docs_rc" != 0 ]; then
    echo "--- docs-build failed (exit $docs_rc); the end of build/docs-build.log:"
    tail -n 40 build/docs-build.log
fi

status() { [ "$1" = 0 ] && echo "ok" || echo "FAILED (exit $1)"; }
echo "stage lint        $(printf %4d "$lint_s") s  ok"
echo "stage docs-build  $(printf %4d "$docs_s") s  $(status "$docs_rc")  (alongside pytest; per notebook: build/docs-build.log)"
echo "stage pytest      $(printf %4d "$pytest_s") s  $(status "$pytest_rc")  ($WORKERS workers)"
echo "stage total       $(printf %4d $(($(now) - start))) s"
[ "$docs_rc" = 0 ] && [ "$pytest_rc" = 0 ]
