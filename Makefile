# Two commands on a fresh machine: `make demo` (the main job) and `make test` (everything CI runs).
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint
setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/rlhfkit rm --data examples/prefs_train.jsonl --eval-data examples/prefs_heldout.jsonl --base minilm-l6 --output runs/rm-demo --epochs 2
	.venv/bin/rlhfkit score --model runs/rm-demo --data examples/prefs_heldout.jsonl --json

test: setup
	.venv/bin/pytest -q

test-fast: setup
	.venv/bin/pytest -q -m "not slow"

lint: setup
	.venv/bin/ruff check rlhfkit tests bench
