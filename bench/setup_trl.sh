#!/usr/bin/env bash
# Idempotent set-up of the peers' venvs, kept apart from the project's .venv so TRL's pins never touch
# rlhfkit's own dependencies:
#   bash bench/setup_trl.sh ppo   -> bench/.venv-trl      TRL 1.0.0  (trl.experimental.ppo.PPOTrainer)
#   bash bench/setup_trl.sh dpo   -> bench/.venv-trl-dpo  TRL 1.16.0 (trl.DPOTrainer)
#   bash bench/setup_trl.sh grpo  (or rloo) -> the same venv (trl.GRPOTrainer, trl.RLOOTrainer)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
case "${1:-ppo}" in
  # versions that install together and run the PPO trainer on CPU (resolved by pip here)
  ppo) VENV=.venv-trl;     PINS=(trl==1.0.0 transformers==5.4.0 accelerate==1.15.0 datasets==5.2.0) ;;
  # the same transformers/accelerate/datasets/peft as rlhfkit's .venv, so only the trainers differ
  dpo|grpo|rloo) VENV=.venv-trl-dpo; PINS=(trl==1.16.0 transformers==5.24.0 accelerate==1.15.0 datasets==5.2.0 peft==0.21.2) ;;
  *) echo "usage: $0 ppo|dpo|grpo|rloo" >&2; exit 2 ;;
esac
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.setup-stamp"
want="$(sha256sum setup_trl.sh | cut -c1-16)-$VENV"  # per venv: dpo, grpo and rloo share one
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned torch makes pip resolve a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "${PINS[@]}"
echo "$want" > "$stamp"
