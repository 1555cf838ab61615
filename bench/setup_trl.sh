#!/usr/bin/env bash
# Idempotent set-up of bench/.venv-trl: an isolated venv with TRL 1.0.0 (the PPO baseline of ppo_vs_trl.py).
# Kept apart from the project's .venv so TRL's pins never touch rlhfkit's own dependencies.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv-trl
# Versions that install together and run trl.experimental.ppo.PPOTrainer on CPU (resolved by pip here).
PINS=(trl==1.0.0 transformers==5.4.0 accelerate==1.15.0 datasets==5.2.0)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.setup-stamp"
want="$(sha256sum setup_trl.sh | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned torch makes pip resolve a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "${PINS[@]}"
echo "$want" > "$stamp"
