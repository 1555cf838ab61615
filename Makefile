# Two commands on a fresh machine: `make demo` (the main job) and `make test` (everything CI runs).
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-quick test test-fast lint docs
setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/rlhfkit demo --output runs/demo

demo-quick: setup
	.venv/bin/rlhfkit demo --quick --output runs/demo-quick

test: setup
	.venv/bin/pytest -q

test-fast: setup
	.venv/bin/pytest -q -m "not slow"

lint: setup
	.venv/bin/ruff check rlhfkit tests bench

docs: setup  # the documentation site, into site/ (a broken link or a page missing from the nav fails it)
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
