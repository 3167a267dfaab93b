# Two commands a fresh machine needs:  `make demo`  and  `make test`.
# Both create .venv on first use (CPU build of torch, pinned in constraints-cpu.txt).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-full nbval lint format docs docs-build docs-assets browser bench student clean mini-train

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt torch
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e ".[all]"
	touch $(STAMP)

# The docs' math renderer, served by the site itself (no CDN): MathJax 3 (SVG output: no web
# fonts to fetch) from its npm package,
# unpacked into docs/js/vendor/ (git-ignored). Needs npm (and the registry) once.
MATHJAX_VERSION := 3.2.2
MATHJAX := docs/js/vendor/mathjax/tex-svg.js
$(MATHJAX):
	rm -rf docs/js/vendor/mathjax && mkdir -p docs/js/vendor/mathjax
	tmp=$$(mktemp -d) && npm pack --silent --pack-destination $$tmp mathjax@$(MATHJAX_VERSION) >/dev/null \
	  && tar -xzf $$tmp/mathjax-$(MATHJAX_VERSION).tgz -C $$tmp \
	  && cp -r $$tmp/package/es5/tex-svg.js $$tmp/package/es5/input $$tmp/package/es5/a11y \
	     $$tmp/package/es5/ui $$tmp/package/es5/sre $$tmp/package/es5/adaptors docs/js/vendor/mathjax/ \
	  && cp $$tmp/package/LICENSE docs/js/vendor/mathjax/ && rm -rf $$tmp

docs-assets: $(MATHJAX)

# Headless Debian chromium + chromedriver for tests/test_docs_browser.py: installed when make
# runs as root (CI) and they are missing; elsewhere the test skips and says why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium/chromedriver missing (not root): the browser test will skip"; fi; \
	fi

# Notebooks executed in fast mode for the site, outside notebooks/ (which stays without outputs);
# a copy is redone only when its notebook or the library changed. docs/_hooks/notebooks.py publishes them.
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
EXECUTED := $(patsubst notebooks/%,build/executed/notebooks/%,$(NOTEBOOKS))
LIBRARY := $(wildcard safescore/*.py safescore/*/*.py safescore/*/*/*.py)
build/executed/notebooks/%.ipynb: notebooks/%.ipynb $(LIBRARY) $(STAMP)
	CI=1 OMP_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error $(BIN)/python docs/execute_notebooks.py $< --out build/executed/notebooks

# The site, built strictly from the executed notebooks (used by the browser test).
docs-build: $(STAMP) $(MATHJAX) $(EXECUTED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

demo: $(STAMP)
	$(BIN)/safescore demo --out outputs/demo

# Lint, then docs-build (the notebooks executed once, the site) alongside pytest on 2 workers;
# the browser test runs last, on the built site. Ends with one line per stage and its time.
test: $(STAMP) browser
	@BIN=$(BIN) MAKE="$(MAKE)" .ci/test-stages.sh

# `make test` plus the slow variations that prove nothing more for a contributor (tests marked
# `full`, e.g. the coursework grading each whole student version, not only its exercises).
test-full: $(STAMP) browser
	@SAFESCORE_TEST_FULL=1 BIN=$(BIN) MAKE="$(MAKE)" .ci/test-stages.sh

# The notebooks run once per `make test`, by docs-build (fast mode, any failing cell or assert
# fails it, as nbval --nbval-lax did); `make nbval` runs them through nbval instead.
nbval: $(STAMP)
	CI=$${CI:-1} TRANSFORMERS_VERBOSITY=error $(BIN)/python -m pytest notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

# Student notebooks (course/release/) and the nbgrader gradebook (course/gradebook.db).
student: $(STAMP)
	$(BIN)/python -m safescore.course.assign student --course-dir course --notebooks notebooks

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: $(STAMP) $(MATHJAX) $(EXECUTED)
	$(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/python benchmarks/toy_throughput.py
	$(BIN)/python benchmarks/toy_solvers.py
	TRANSFORMERS_VERBOSITY=error $(BIN)/python benchmarks/sd_overhead.py --json outputs/sd_overhead_tiny128.json

# Retrain the shipped mini Stable Diffusion on digits (CPU, < 15 min on 2 cores; deterministic).
mini-train: $(STAMP)
	TRANSFORMERS_VERBOSITY=error $(BIN)/python -m safescore.sd.mini.train --out safescore/sd/mini/weights --seed 0

clean:
	rm -rf $(VENV) site outputs build docs/js/vendor
