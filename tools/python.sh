# Sourced by the launchers (torchrun.sh, slurm_run.sh): which Python runs
# ws_mm, one rule for every script.
#   1. $PYTHON, if set;
#   2. else the `python` on PATH (the environment you activated), if it has
#      ws_mm's dependencies (torch, mmengine, mmcv);
#   3. else the repo's .venv (made by `make setup`).
# The repo root goes first on PYTHONPATH, as the toolboxes' dist scripts do,
# so ws_mm runs from this checkout whether or not it is pip-installed.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# Found without importing them: importing torch takes seconds.
has_dependencies='import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("torch", "mmengine", "mmcv")))'
if [ -z "${PYTHON:-}" ]; then
    for candidate in "$(command -v python || command -v python3 || true)" "$root/.venv/bin/python"; do
        if [ -x "$candidate" ] && "$candidate" -c "$has_dependencies" 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
    if [ -z "${PYTHON:-}" ]; then
        echo "error: no Python with torch, mmengine and mmcv found: activate your OpenMMLab environment, set PYTHON=/path/to/python, or run 'make setup' for the repo's .venv" >&2
        exit 2
    fi
fi
