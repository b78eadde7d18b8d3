#!/usr/bin/env bash
# Big-table stage: tests/test_bigtable.py (a sparse np.memmap of V * D = 2**31 + 512
# float32; gather / scatter_add of rows past element 2**31 against NumPy), and a
# checkpoint past 4 GiB (zip64 offsets; tests/test_checkpoints.py, 4 GiB written).
# Plain build: the CI venv's install when there is one (EMBTABLE_PY=python to
# choose), else a fresh Release build in a throwaway venv. The UBSan build runs
# the same file inside ci/asan.sh (EMBTABLE_BIGTABLE=1 there too).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/_venv.sh

PY="${EMBTABLE_PY:-}"
if [[ -z "$PY" && -x .venv-ci/bin/python ]] && .venv-ci/bin/python -c "import embtable" 2>/dev/null; then
  PY=.venv-ci/bin/python
fi
if [[ -z "$PY" ]]; then
  VENV="${EMBTABLE_PLAIN_VENV:-/tmp/embtable-venv-plain}"
  echo "== bigtable: Release build into $VENV =="
  make_venv "$VENV"
  install_embtable "$VENV" build/plain
  PY="$VENV/bin/python"
fi
echo "== bigtable: $("$PY" -c 'import embtable; print(embtable.__file__)') =="
# TMPDIR must support sparse files: the 8 GiB table only writes the touched pages.
EMBTABLE_BIGTABLE=1 "$PY" -m pytest -q -p no:cacheprovider -m bigtable tests/test_bigtable.py \
  tests/test_checkpoints.py "$@"
