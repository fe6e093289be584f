#!/usr/bin/env bash
# Extraction benchmark: pages/s and MB/s per format over a folder, PDFs compared in the same
# run with poppler's pdftotext (installed here from Debian if missing; not part of the tests).
# Usage: scripts/bench-extract.sh [DIR]   (default: ../shared/evaldata/documents)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-../shared/evaldata/documents}"
if ! command -v pdftotext >/dev/null; then
    echo "installing poppler-utils for pdftotext" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get install -y poppler-utils >/dev/null \
        || { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y poppler-utils >/dev/null; }
fi
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -w /var/cache/kiln/target ]; then
    export CARGO_TARGET_DIR=/var/cache/kiln/target
fi
# Kiln's own crates optimised too (dependencies always are).
CARGO_PROFILE_DEV_OPT_LEVEL=2 exec cargo run -q -p kiln -- bench extract "$dir"
