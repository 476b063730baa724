#!/usr/bin/env bash
# Create the project virtualenv with a Python >= 3.12 found on this machine, then install the package.
set -euo pipefail
VENV="${1:-.venv}"

find_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    candidates+=(python3.13 python3.12 python3)
    for root in "${PYENV_ROOT:-$HOME/.pyenv}/versions" /root/.pyenv/versions /usr/local/bin /usr/bin; do
        for p in "$root"/3.1[2-9]*/bin/python3 "$root"/python3.1[2-9]; do
            [ -x "$p" ] && candidates+=("$p")
        done
    done
    for c in "${candidates[@]}"; do
        local exe
        exe=$(command -v "$c" 2>/dev/null) || continue
        if "$exe" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            echo "$exe"
            return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY=$(find_python) || { echo "error: no Python >= 3.12 found (set PYTHON=/path/to/python3.12)" >&2; exit 1; }
    echo "bootstrap: creating $VENV with $PY ($("$PY" -V))"
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"
touch "$VENV/.installed"
