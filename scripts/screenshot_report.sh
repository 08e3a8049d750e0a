#!/usr/bin/env bash
# Render an emoplug HTML report in headless Chromium and save a screenshot (the documented
# check that report.html is readable in a browser).
#   scripts/screenshot_report.sh runs/<name>/report/report.html [out.png] [height]
# Chromium missing? apt-get update && apt-get install -y chromium
set -euo pipefail

html=${1:?usage: $0 REPORT.html [OUT.png] [HEIGHT]}
out=${2:-report.png}
height=${3:-4000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z "$browser" ]]; then
    echo "screenshot_report: no chromium found (apt-get install -y chromium)" >&2
    exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --screenshot="$(realpath -m "$out")" \
    --window-size="1280,$height" "file://$(realpath "$html")" >/dev/null 2>&1
test -s "$out"
echo "$out"
