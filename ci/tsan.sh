#!/usr/bin/env bash
# TSan stage: a RelWithDebInfo -fsanitize=thread build (gcc) into its own venv,
# running the threading tests (many Python threads at once, the atomic
# scatter-add, set_num_threads changed concurrently, the pool, fork) with zero
# reports. No suppressions. First proves TSan is live with a deliberate race.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/_venv.sh

VENV="${EMBTABLE_TSAN_VENV:-/tmp/embtable-venv-tsan}"
LOG="${EMBTABLE_TSAN_LOG:-/tmp/embtable-tsan.log}"
echo "== tsan: build (gcc, thread, RelWithDebInfo) into $VENV =="
make_venv "$VENV"
install_embtable "$VENV" build/tsan \
  -Ccmake.build-type=RelWithDebInfo \
  -Ccmake.define.EMBTABLE_SANITIZE=thread \
  -Ccmake.define.EMBTABLE_TEST_CANARIES=ON
PY="$VENV/bin/python"

# The TSan runtime must be loaded first; Python itself is not instrumented, but
# its GIL is a pthread mutex/condvar, which TSan's interceptors see.
export LD_PRELOAD="$(gcc -print-file-name=libtsan.so)"
export TSAN_OPTIONS="die_after_fork=0:halt_on_error=1:exitcode=66:second_deadlock_stack=1:history_size=4"

"$PY" - <<'PY'
import embtable
b = embtable.show_config("dicts")["build"]
print(b)
assert b["sanitize"] == "thread", b
PY

echo "== tsan: a deliberate data race in the extension must be reported (TSan is live) =="
out="$("$PY" -c "import embtable._core as c; c._canary_data_race()" 2>&1)" && {
  echo "FAIL: the TSan canary race was not reported"; exit 1; }
grep -q "WARNING: ThreadSanitizer: data race" <<<"$out" || { echo "FAIL: no TSan report:"; echo "$out" | tail; exit 1; }
echo "ok: TSan reported the canary race"

echo "== tsan: threading tests =="
tests=(tests/test_concurrency.py tests/test_vectors.py)
for f in tests/test_thread*.py tests/test_parallel*.py; do [[ -e "$f" ]] && tests+=("$f"); done
rc=0
"$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" "$@" 2>&1 | tee "$LOG" || rc=$?
if grep -q "WARNING: ThreadSanitizer" "$LOG"; then
  echo "FAIL: ThreadSanitizer report(s) in $LOG"; exit 1
fi
[[ $rc -eq 0 ]] || { echo "FAIL: pytest exit $rc"; exit "$rc"; }
echo "tsan: 0 ThreadSanitizer reports"
