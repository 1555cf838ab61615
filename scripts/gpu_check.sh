#!/usr/bin/env bash
# The GPU check of issue 11; scripts/gpu_check.py holds the steps (its docstring says what each one runs).
#
#   bash scripts/gpu_check.sh --prepare [--no-wheels]
#       on a machine with the embedded models and PyPI: SmolLM2's tokenizer into .gpu_check/tokenizer and the
#       wheels a bare GPU machine lacks (TRL 1.0.0, DeepSpeed, rlhfkit's own deps) into .gpu_check/wheels,
#       for Python 3.12 on x86-64. Carry .gpu_check along (it is git-ignored).
#   bash scripts/gpu_check.sh [--wheels DIR] [gpu_check.py arguments]
#       on the GPU machine, no network: installs every wheel in DIR (default .gpu_check/wheels, if present,
#       except in a dry run)
#       into a private folder put first on PYTHONPATH, uses rlhfkit from this checkout, then runs the check.
#   PYTHON=.venv/bin/python bash scripts/gpu_check.sh --dry-run
#       on a CPU: tiny models, every step that needs CUDA skipped (saying so).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.12 wheels for the GPU machine: what it lacks (its image has torch, transformers, accelerate, peft).
# DeepSpeed ships no wheel: it is built here, pure Python (its CUDA ops compile on first use there).
# (datasets 5.2 also needs pyarrow >= 24, which the image is assumed to have)
BINARY_WHEELS=(trl==1.0.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 vaderSentiment==3.3.2
               hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
               typing-extensions==4.16.0)
DEEPSPEED=deepspeed==0.19.8

prepare() {
  mkdir -p .gpu_check/tokenizer
  "$PY" - <<'EOF'
import shutil
from pathlib import Path
from rlhfkit.models.load import resolve_model_path
src = resolve_model_path("smollm2-135m-instruct")
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
    if (src / name).is_file():
        shutil.copy(src / name, Path(".gpu_check/tokenizer") / name)
print(f"tokenizer: {src} -> .gpu_check/tokenizer")
EOF
  if [ "${1:-}" != "--no-wheels" ]; then
    mkdir -p .gpu_check/wheels
    local plat=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
      plat+=(--platform "$p")
    done
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${plat[@]}" -d .gpu_check/wheels "${BINARY_WHEELS[@]}"
    DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .gpu_check/wheels "$DEEPSPEED"
    echo "wheels: $(ls .gpu_check/wheels | wc -l) in .gpu_check/wheels ($(du -sh .gpu_check/wheels | cut -f1))"
  fi
}

if [ "${1:-}" = "--prepare" ]; then
  shift
  prepare "$@"
  exit 0
fi

WHEELS=""
if [ "${1:-}" = "--wheels" ]; then
  WHEELS=$2
  shift 2
elif [ -d .gpu_check/wheels ] && [[ " $* " != *" --dry-run "* ]]; then
  WHEELS=.gpu_check/wheels  # the wheels --prepare fetched (Python 3.12): for the GPU machine, not a dry run
fi
if [ -n "$WHEELS" ]; then
  SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
  # --no-deps: every wheel needed is in the folder; the ones the machine has already are not replaced
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
fi
# rlhfkit itself from this checkout (no build step, no network)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import rlhfkit.cli" || { echo "rlhfkit does not import: give the missing wheels with --wheels" >&2; exit 2; }
exec "$PY" scripts/gpu_check.py "$@"
