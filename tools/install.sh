#!/usr/bin/env bash
# Idempotent setup: creates .venv with torch, the package (editable), its dependencies and
# detectron2. Quick when already done: a stamp records the hash of the inputs that define it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
D2_SPEC=${D2_SPEC:-"sal-detectron2==0.7.2"}
STAMP="$VENV/.unimoco-install-stamp"

want=$(cat tools/install.sh setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import unimoco, torch, detectron2" 2>/dev/null; then
  echo "[install] $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
# shellcheck disable=SC2086
$PIP install -q $TORCH_SPEC
$PIP install -q -e ".[dev]"

# detectron2 is not on PyPI under its own name; sal-detectron2 is its Python code with a
# compiled extension for 3.10 only. Its pure-Python part runs on newer Pythons (the R-CNN
# models need no compiled op), so it goes into its own folder on the path. A detectron2 built
# from source and already importable is left alone.
if ! "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
  D2_DIR="$VENV/detectron2-pkg"
  rm -rf "$D2_DIR"
  # shellcheck disable=SC2086
  $PIP install -q --no-deps --only-binary=:all: --python-version 3.10 --target "$D2_DIR" $D2_SPEC
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  realpath "$D2_DIR" > "$site/unimoco-detectron2.pth"
fi
"$VENV/bin/python" -c "import unimoco, torch, detectron2; print('[install] torch', torch.__version__, '| detectron2', detectron2.__version__)"
echo "$want" > "$STAMP"
