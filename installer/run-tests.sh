#!/usr/bin/env bash
# Install what is missing, then run the test suite headless. Extra arguments go to pytest
# (e.g. -m slow for the long tests, or -m "" for everything).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export QT_QPA_PLATFORM=offscreen
export PEFT_STUDIO_EXTRAS="${PEFT_STUDIO_EXTRAS:-test,bench}"
bash "$repo/installer/setup.sh"
cd "$repo"
exec "${PEFT_STUDIO_VENV:-$repo/.venv}/bin/python" -m pytest "$@"
