#!/usr/bin/env bash
# Make a fresh virtual environment with vlmeval-echosafe, its pinned host (ms-vlmeval==0.0.20), the lmms-eval
# adapter extra (lmms-eval==0.7.3, docs/lmms_eval.md) and test tools.
#   bash scripts/install.sh [VENV_DIR]      (default .venv)
# TORCH_SPEC overrides the torch pair, e.g. TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" on aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python3 -m venv "$venv"
# torch and torchvision first, as a matching pair: ms-vlmeval imports torchvision, and a torchvision that does
# not match the installed torch fails at `import vlmeval.dataset`.
"$venv/bin/pip" install --quiet ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
"$venv/bin/pip" install --quiet -e ".[test,lmms]"
echo "installed into $venv ($(du -sh "$venv" | cut -f1))"
