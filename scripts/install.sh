#!/usr/bin/env bash
# Make a fresh virtual environment with vlmeval-echosafe, its pinned host (ms-vlmeval==0.0.20), the lmms-eval
# adapter extra (lmms-eval==0.7.3, docs/lmms_eval.md) and test tools, at the exact versions of constraints.txt
# (a tested install; docs/install.md says how to refresh it).
#   bash scripts/install.sh [VENV_DIR]      (default .venv)
# TORCH_SPEC overrides the torch pair, e.g. TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" on aarch64.
# ECHOSAFE_CONSTRAINTS=none installs the newest versions setup.cfg allows instead (what the refresh script does).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
constraints=()
if [ "${ECHOSAFE_CONSTRAINTS:-constraints.txt}" != none ]; then
  constraints=(-c "${ECHOSAFE_CONSTRAINTS:-constraints.txt}")
fi
python3 -m venv "$venv"
# torch and torchvision first, as a matching pair: ms-vlmeval imports torchvision, and a torchvision that does
# not match the installed torch fails at `import vlmeval.dataset`. They are not in constraints.txt (their builds
# differ by platform).
"$venv/bin/pip" install --quiet ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
"$venv/bin/pip" install --quiet "${constraints[@]}" -e ".[test,lmms]"
echo "installed into $venv ($(du -sh "$venv" | cut -f1))${constraints[*]:+ with ${constraints[*]}}"
