#!/usr/bin/env bash
# Adds PEFT Studio to the desktop's application menu (after installer/setup.sh has run).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEFT_STUDIO_VENV:-$repo/.venv}"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
mkdir -p "$apps" "$icons"
sed "s|^Exec=peft-studio|Exec=$venv/bin/peft-studio|" "$repo/installer/peft-studio.desktop" >"$apps/peft-studio.desktop"
if [ -f "$repo/resources/icons/peft-studio.svg" ]; then
    cp "$repo/resources/icons/peft-studio.svg" "$icons/peft-studio.svg"
fi
echo "installed $apps/peft-studio.desktop"
