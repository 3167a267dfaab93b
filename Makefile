# Two commands a fresh machine needs:  `make demo`  and  `make test`.
# Both create .venv on first use (CPU build of torch, pinned in constraints-cpu.txt).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format docs bench clean mini-train

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt torch
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/safescore demo --out outputs/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	CI=$${CI:-1} TRANSFORMERS_VERBOSITY=error $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir /tmp/safescore-site

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: $(STAMP)
	$(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/python benchmarks/toy_throughput.py
	$(BIN)/python benchmarks/toy_solvers.py
	TRANSFORMERS_VERBOSITY=error $(BIN)/python benchmarks/sd_overhead.py --json outputs/sd_overhead_tiny128.json

# Retrain the shipped mini Stable Diffusion on digits (CPU, < 15 min on 2 cores; deterministic).
mini-train: $(STAMP)
	TRANSFORMERS_VERBOSITY=error $(BIN)/python -m safescore.sd.mini.train --out safescore/sd/mini/weights --seed 0

clean:
	rm -rf $(VENV) site outputs
