#!/usr/bin/env bash
# Fuzz stage: an atheris (libFuzzer) harness per public function, each checked
# against a NumPy oracle (tests/fuzz_harness.py), over an embtable built with Debian's
# clang-14 and -fsanitize=address,<UBSan checks>,fuzzer-no-link.
#
#   ci/fuzz.sh [RUNS]   executions per target (default 50000; ci/fuzz_long.sh: 1000000)
#
# FUZZ_JOBS targets run at once (default 2). A crash, sanitizer report or oracle
# mismatch fails the stage; its input is copied to tests/fuzz_corpus/<target>/
# so that the normal suite replays it (commit it with the fix).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/_venv.sh

RUNS="${1:-50000}"
JOBS="${FUZZ_JOBS:-2}"
VENV="${EMBTABLE_FUZZ_VENV:-/tmp/embtable-venv-fuzz}"
WORK="${EMBTABLE_FUZZ_WORK:-/tmp/embtable-fuzz}"
TARGETS=(gather scatter_add scatter_add_deterministic embedding_bag layer)
# UBSan's checks minus vptr: atheris' ASan+libFuzzer runtime has no C++ UBSan
# part (__ubsan_vptr_type_cache). The gcc ASan+UBSan stage (ci/asan.sh) runs vptr.
UBSAN=alignment,bool,builtin,bounds,enum,float-cast-overflow,integer-divide-by-zero
UBSAN+=,nonnull-attribute,null,object-size,pointer-overflow,return,returns-nonnull-attribute
UBSAN+=,shift,signed-integer-overflow,unreachable,vla-bound

echo "== fuzz: install clang-14 + compiler-rt (Debian), atheris =="
apt_install clang-14 libclang-rt-14-dev
make_venv "$VENV"
"$VENV/bin/python" -m pip install -q atheris
echo "== fuzz: build embtable (clang-14, address,fuzzer-no-link,UBSan) into $VENV =="
CC=clang-14 CXX=clang++-14 install_embtable "$VENV" build/fuzz \
  -Ccmake.build-type=RelWithDebInfo \
  -Ccmake.define.EMBTABLE_SANITIZE="address,fuzzer-no-link,$UBSAN" \
  -Ccmake.define.EMBTABLE_TEST_CANARIES=ON

PY="$VENV/bin/python"
SITE="$("$PY" -c 'import atheris; print(atheris.path())')"
# atheris' documented setup for native extensions: its ASan runtime with
# libFuzzer linked in, preloaded, so the extension's coverage counters feed it.
export LD_PRELOAD="$SITE/asan_with_fuzzer.so"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

echo "== fuzz: canaries must be reported under this runtime =="
for c in "_canary_oob_read()|heap-buffer-overflow" "_canary_signed_overflow(1)|signed integer overflow"; do
  out="$("$PY" -c "import embtable._core as c; c.${c%%|*}" 2>&1)" && { echo "FAIL: canary ${c%%|*} passed"; exit 1; }
  grep -q "${c#*|}" <<<"$out" || { echo "FAIL: canary ${c%%|*} not reported:"; echo "$out" | tail; exit 1; }
  echo "ok: ${c%%|*} reported (${c#*|})"
done

rm -rf "$WORK"
mkdir -p "$WORK"
run_one() {
  local t="$1" log="$WORK/$1.log"
  mkdir -p "$WORK/corpus/$t" "$WORK/artifacts" "tests/fuzz_corpus/$t"
  local rc=0
  "$PY" "fuzz/fuzz_$t.py" -runs="$RUNS" -max_len=256 -timeout=60 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$t-" \
    "$WORK/corpus/$t" "tests/fuzz_corpus/$t" >"$log" 2>&1 || rc=$?
  if grep -q "^SKIP" "$log"; then
    echo "fuzz $t: SKIPPED ($(grep '^SKIP' "$log"))"
    return 0
  fi
  local done_line
  done_line="$(grep -E '^Done [0-9]+ runs' "$log" || true)"
  if [[ $rc -ne 0 || -z "$done_line" ]] || grep -qE "ERROR: AddressSanitizer|runtime error:" "$log"; then
    echo "fuzz $t: FAILED (rc=$rc); last lines of $log:"
    tail -40 "$log"
    for a in "$WORK/artifacts/$t-"*; do
      [[ -e "$a" ]] && cp "$a" "tests/fuzz_corpus/$t/crash-$(basename "$a" | sed "s/^$t-//")" \
        && echo "kept $a as tests/fuzz_corpus/$t/ (commit it with the fix)"
    done
    return 1
  fi
  echo "fuzz $t: $done_line, $(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}') executions, 0 crashes"
}

echo "== fuzz: $RUNS executions per target, $JOBS at a time =="
for t in "${TARGETS[@]}"; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  ( rc=0; run_one "$t" || rc=$?; echo "$rc" >"$WORK/$t.rc" ) &
done
wait
fail=0
for t in "${TARGETS[@]}"; do
  [[ "$(cat "$WORK/$t.rc" 2>/dev/null)" == 0 ]] || fail=1
done
if ((fail)); then echo "fuzz: FAILED"; exit 1; fi
echo "fuzz: all targets passed, 0 crashes, 0 mismatches, 0 sanitizer reports"
