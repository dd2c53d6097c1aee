#!/usr/bin/env bash
# Render a report's index.html in headless Chromium to a PNG screenshot, to look at the page as a user would.
# Run by hand (not part of pytest; pytest checks the page structure instead):
#   python -m vlmeval_echosafe.report --work-dir OUT --out OUT/report
#   scripts/check_report_render.sh OUT/report [SCREENSHOT.png] [HEIGHT_PX]
# Needs Debian's chromium (apt-get install -y chromium). Exit 3 when no browser is installed.
set -euo pipefail
report=${1:?usage: scripts/check_report_render.sh REPORT_DIR [SCREENSHOT.png] [HEIGHT_PX]}
out=$(realpath -m "${2:-$report/screenshot.png}")
height=${3:-5000}
python=${PYTHON:-python}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "check_report_render: no chromium found; install it with: apt-get update && apt-get install -y chromium" >&2
    exit 3
fi
if [ ! -f "$report/index.html" ]; then
    echo "check_report_render: no $report/index.html; run python -m vlmeval_echosafe.report first" >&2
    exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$out"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" \
    --window-size=1400,"$height" --screenshot="$out" "file://$(realpath "$report")/index.html" >/dev/null 2>&1 || true
if [ ! -s "$out" ]; then
    echo "check_report_render: chromium wrote no screenshot" >&2
    exit 1
fi
# A blank page (broken HTML, missing CSS/tables) renders almost entirely white.
"$python" - "$out" <<'PY'
import sys
from PIL import Image
img = Image.open(sys.argv[1]).convert("L")
import numpy as np
dark = float((np.asarray(img) < 200).mean())
print(f"screenshot {sys.argv[1]}: {img.width}x{img.height}, {100 * dark:.1f}% non-white pixels")
sys.exit(0 if dark > 0.01 else 1)
PY
