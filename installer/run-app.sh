#!/usr/bin/env bash
# Install what is missing, then start PEFT Studio on the default model and demo data.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/installer/setup.sh"
exec "${PEFT_STUDIO_VENV:-$repo/.venv}/bin/peft-studio" gui "$@"
