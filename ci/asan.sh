#!/usr/bin/env bash
# ASan + UBSan stage: a RelWithDebInfo build with -fsanitize=address,undefined
# (-fno-sanitize-recover=undefined) into its own venv; proves the sanitizers are
# live with the canaries, then runs the whole test suite with zero reports.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/_venv.sh

VENV="${EMBTABLE_ASAN_VENV:-/tmp/embtable-venv-asan}"
LOG="${EMBTABLE_ASAN_LOG:-/tmp/embtable-asan.log}"
echo "== asan: build (gcc, address,undefined, RelWithDebInfo) into $VENV =="
make_venv "$VENV"
install_embtable "$VENV" build/asan \
  -Ccmake.build-type=RelWithDebInfo \
  -Ccmake.define.EMBTABLE_SANITIZE=address,undefined \
  -Ccmake.define.EMBTABLE_TEST_CANARIES=ON

# gcc's ASan runtime must come first in the process; libstdc++ too, so that
# operator new/delete interception sees the extension's C++ allocations.
# libcrypt too: gcc's ASan intercepts crypt() and resolves the real one at start-up,
# so without it Python's crypt module (stdlib, imported by the demo's tests) jumps to 0.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# awk reads to the end (no early exit): under pipefail, a reader that stops early
# kills ldconfig with SIGPIPE (exit 141) once its listing outgrows the pipe buffer.
LIBCRYPT="$(ldconfig -p | awk '!f && (/libcrypt\.so\.1 .*x86-64/ || /libcrypt\.so\.1 \(libc6,x86-64/) {print $NF; f=1}')"
[[ -n "$LIBCRYPT" ]] && LD_PRELOAD+=" $LIBCRYPT"
export LD_PRELOAD
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:strict_init_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
PY="$VENV/bin/python"

echo "== asan: the installed build is the sanitizer build =="
"$PY" - <<'PY'
import embtable
b = embtable.show_config("dicts")["build"]
print(b)
assert "address" in b["sanitize"] and "undefined" in b["sanitize"], b
PY

echo "== asan: canaries must be reported (proves the sanitizers are live) =="
canary() {  # canary NAME CALL PATTERN
  local out rc=0
  out="$("$PY" -c "import embtable._core as c; c.$2" 2>&1)" || rc=$?
  if [[ $rc -eq 0 ]] || ! grep -q "$3" <<<"$out"; then
    echo "FAIL: canary $1 was not reported (rc=$rc):"; echo "$out" | tail -20; exit 1
  fi
  echo "ok: canary $1 reported ($3), rc=$rc"
}
canary oob-read "_canary_oob_read()" "AddressSanitizer: heap-buffer-overflow"
canary signed-overflow "_canary_signed_overflow(1)" "runtime error: signed integer overflow"

echo "== asan: whole test suite under ASan + UBSan =="
rc=0
EMBTABLE_BIGTABLE="${EMBTABLE_BIGTABLE:-1}" EMBTABLE_HYPOTHESIS_EXAMPLES="${EMBTABLE_HYPOTHESIS_EXAMPLES:-500}" \
  "$PY" -m pytest -q -p no:cacheprovider tests "$@" 2>&1 | tee "$LOG" || rc=$?

if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$LOG"; then
  echo "FAIL: sanitizer report(s) in $LOG"; exit 1
fi
[[ $rc -eq 0 ]] || { echo "FAIL: pytest exit $rc"; exit "$rc"; }
echo "asan: 0 sanitizer reports"
