#!/usr/bin/env bash
# Set up a virtual environment at the repo root with the OpenMMLab stack and
# ws_mm (editable), on a machine that has nothing but Python 3.11 and a C++
# compiler. Two stacks:
#   bash tools/setup_env.sh          .venv/: torch 2.13.0 (CPU build), numpy 2;
#                                    with mmaction2 (requirements/action.txt)
#   bash tools/setup_env.sh oldest   .venv-oldest/: torch 2.0.1, numpy < 2, the
#                                    oldest torch ws_mm supports, as users of
#                                    OpenMMLab's prebuilt mmcv 2.1.0 have it;
#                                    with mmpretrain (requirements/cls.txt)
#
# Idempotent: every step checks first and says what it decided ("have" or
# "install"), so a second run changes nothing and takes seconds. The slow
# part, building mmcv 2.1.0 with its compiled ops (minutes on 2 cores),
# happens once per machine and torch: the wheel is cached in $WS_MM_CACHE
# (default ~/.cache/ws_mm), keyed by the mmcv, torch and Python versions.
#
# Output of each step goes to setup.log in the environment; on failure the
# script names the step, shows the end of its output and says what to do.
set -euo pipefail

MMCV_VERSION=2.1.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${1:-main} in
main)
    TORCH_VERSION=2.13.0 venv=$root/.venv constraints=()
    extras=(-r "$root/requirements/action.txt") toolbox=mmaction ;;
oldest)
    # PyPI's torch 2.0.1 is the CUDA build: it brings the nvidia runtime
    # packages (about 3 GB) and runs on the CPU. It needs numpy < 2, and so
    # an opencv from before numpy 2 (requirements/oldest.txt).
    TORCH_VERSION=2.0.1 venv=$root/.venv-oldest
    constraints=(-c "$root/requirements/oldest.txt")
    extras=(-r "$root/requirements/cls.txt") toolbox=mmpretrain ;;
*)
    echo "usage: bash tools/setup_env.sh [main|oldest]" >&2; exit 2 ;;
esac
py=$venv/bin/python
cache=${WS_MM_CACHE:-$HOME/.cache/ws_mm}
log=$venv/setup.log

say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] FAILED: %s\n' "$1" >&2; shift; printf '[setup]   %s\n' "$@" >&2; exit 1; }

# run STEP HINT CMD...: run CMD with its output in the log; on failure show why.
run() {
    local step=$1 hint=$2; shift 2
    printf '\n### %s: %s\n' "$step" "$*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        printf '[setup] FAILED at step "%s". Last lines of %s:\n' "$step" "$log" >&2
        tail -n 25 "$log" | sed 's/^/    /' >&2
        fail "$step" "$hint"
    fi
}

base_python=${PYTHON:-python3}
command -v "$base_python" >/dev/null ||
    fail "find python" "no '$base_python' on PATH; install Python 3.11 or set PYTHON=/path/to/python3.11"
pyver=$("$base_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$pyver" = 3.11 ] ||
    fail "check python" "$base_python is Python $pyver; the pinned stack (torch $TORCH_VERSION) is for 3.11: set PYTHON=/path/to/python3.11"

if [ -x "$py" ]; then
    say "have ${venv#$root/}"
else
    say "create ${venv#$root/}"
    "$base_python" -m venv "$venv" || fail "create ${venv#$root/}" "python3 -m venv failed: install the venv module (Debian: python3-venv)"
fi
: >"$log"

pip() { "$py" -m pip --disable-pip-version-check "$@"; }

# installed NAME: print NAME's installed version, or nothing. Isolated (-I):
# the checkout's ws_mm.egg-info must not count as installed.
installed() { "$py" -I -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }

if [ "$(installed torch)" = "$TORCH_VERSION" ] || [ "$(installed torch)" = "$TORCH_VERSION+cpu" ]; then
    say "have torch $TORCH_VERSION"
else
    say "install torch $TORCH_VERSION and build tools"
    run "install torch" "torch==$TORCH_VERSION must be installable by pip from this machine" \
        pip install "${constraints[@]}" "torch==$TORCH_VERSION" 'setuptools<82' wheel ninja numpy
fi

# mmcv with compiled ops: installed, else from the wheel cache, else built.
has_ops() { "$py" -c 'from mmcv.ops import nms, roi_align' >/dev/null 2>&1; }
pytag=cp${pyver/./}
wheel_dir=$cache/wheels/mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${pytag}
if [ "$(installed mmcv)" = "$MMCV_VERSION" ] && has_ops; then
    say "have mmcv $MMCV_VERSION with ops"
else
    if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
        say "build mmcv $MMCV_VERSION with ops (once per machine and torch, minutes on 2 cores; progress in $log)"
        tmp=$(mktemp -d)
        # --no-build-isolation: the build must see the installed torch, or mmcv
        # is built silently WITHOUT its ops. --no-cache-dir: pip's wheel cache
        # ignores MMCV_WITH_OPS and could serve a wheel built without them.
        # -g0: no debug info (Python's own CFLAGS ask for -g), which halves
        # the compile time of each op and changes no code.
        run "build mmcv" "needs gcc/g++ and the Python 3.11 headers (Debian: build-essential python3-dev); the build log is in $log" \
            env MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" CFLAGS="${CFLAGS:-} -g0" \
            "$py" -m pip wheel --no-deps --no-build-isolation --no-cache-dir \
            -w "$tmp" "mmcv==$MMCV_VERSION"
        mkdir -p "$wheel_dir"
        mv "$tmp"/mmcv-*.whl "$wheel_dir"/ && rmdir "$tmp"
    else
        say "have cached mmcv wheel in $wheel_dir"
    fi
    say "install mmcv $MMCV_VERSION from $wheel_dir"
    run "install mmcv" "delete $wheel_dir to rebuild the wheel" \
        pip install --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
fi

# The rest: pip's dry run says what is missing; with everything present it is empty.
reqs=("${constraints[@]}" -r "$root/requirements/stack.txt" -r "$root/requirements/tests.txt"
      "${extras[@]}")
missing=$(pip install --dry-run "${reqs[@]}" 2>>"$log" | sed -n 's/^Would install //p') ||
    fail "resolve the stack" "pip could not resolve requirements/stack.txt; see $log"
if [ -z "$missing" ]; then
    say "have mmengine, mmdet, mmsegmentation, $toolbox and the test tools"
else
    say "install $missing"
    run "install the stack" "the pins are in requirements/stack.txt" pip install "${reqs[@]}"
fi
if [ -n "$(installed ws_mm)" ]; then
    say "have ws_mm (editable)"
else
    say "install ws_mm (editable)"
    run "install ws_mm" "pip install -e . failed" pip install --no-deps --no-build-isolation -e "$root"
fi

run "verify" "the stack imports but does not work; see $log" \
    "$py" -I -c 'import importlib, importlib.metadata as m, torch; from mmcv.ops import nms, roi_align; import mmdet, mmseg, ws_mm
b = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
keep = nms(b, torch.tensor([0.9, 0.8]), 0.5)[1]
assert keep.tolist() == [0], keep
importlib.import_module("'"$toolbox"'.models")  # mmpretrain: torchvision loads
cv2 = {}  # opencv-python and opencv-contrib-python share one cv2 folder
for dist in ("opencv-python", "opencv-contrib-python"):
    try:
        cv2[dist] = m.version(dist)
    except m.PackageNotFoundError:
        pass
assert len(set(cv2.values())) == 1, f"cv2 of two versions in one folder: {cv2}"
print("ok: torch", torch.__version__, "| mmcv ops | mmdet | mmseg | '"$toolbox"' | ws_mm")'
say "environment ready: $venv ($(tail -n 1 "$log"))"
