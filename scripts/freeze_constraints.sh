#!/usr/bin/env bash
# Regenerate constraints.txt: the exact versions of every package of a fresh install that passes the tests.
#   bash scripts/freeze_constraints.sh [VENV_DIR]      (default .venv-freeze; deleted afterwards)
# It installs WITHOUT the current constraints (so it picks up today's newest releases), runs the README's test
# command, and only if that passes writes constraints.txt. torch, torchvision and the CUDA/triton packages that
# come with them are left out: scripts/install.sh installs them first as a matching pair (TORCH_SPEC), and their
# builds differ by platform.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-freeze}"
rm -rf "$venv"
ECHOSAFE_CONSTRAINTS=none bash scripts/install.sh "$venv"
"$venv/bin/python" -m pytest -q
{
  echo "# Exact versions of a fresh install that passed the test suite on $(date -u +%Y-%m-%d)"
  echo "# (Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'), $(uname -m))."
  echo "# Regenerate with: bash scripts/freeze_constraints.sh   (docs/install.md)"
  "$venv/bin/pip" freeze --exclude-editable --disable-pip-version-check \
    | grep -v -E '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' \
    | grep -v -E '^vlmeval-echosafe( |=|@)'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
rm -rf "$venv"
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) pins)"
