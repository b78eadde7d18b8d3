#!/usr/bin/env bash
# Emulated AVX-512 stage: a build whose avx512 kernel units are compiled for AVX2 +
# FMA + F16C with their explicit _mm512_* intrinsics from SIMDe
# (-DEMBTABLE_EMULATE_AVX512=ON, docs/testing.md), so the AVX-512-only source lines
# run on a CPU without AVX-512; the SIMD tests then compare them, forced, with the
# baseline and AVX2 kernels bit for bit. Skipped (exit 0) without SIMDe (Debian:
# libsimde-dev), off x86-64 or on a CPU without AVX2 + FMA + F16C.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/_venv.sh

skip() { echo "== avx512-emulated: skipped: $1 =="; exit 0; }
[[ "$(uname -m)" == x86_64 ]] || skip "not x86-64"
for f in avx2 fma f16c; do
  grep -qw "$f" /proc/cpuinfo || skip "this CPU lacks $f"
done
if [[ ! -f /usr/include/simde/x86/avx512.h ]]; then
  (apt_install libsimde-dev) >/dev/null 2>&1 || true
  [[ -f /usr/include/simde/x86/avx512.h ]] || skip "no SIMDe (apt-get install libsimde-dev)"
fi

VENV="${EMBTABLE_AVX512EMU_VENV:-/tmp/embtable-venv-avx512emu}"
echo "== avx512-emulated: build into $VENV =="
make_venv "$VENV"
install_embtable "$VENV" build/avx512emu -Ccmake.define.EMBTABLE_EMULATE_AVX512=ON
"$VENV/bin/python" -c '
import embtable
simd = embtable.show_config(mode="dicts")["simd"]
assert simd.get("emulated") == ["avx512"], simd
print(simd)'
# Every SIMD test runs each level the build runs (tests/simd_levels.py), avx512
# included; EMBTABLE_SIMD=avx512 makes it the default level of the rest too.
EMBTABLE_SIMD=avx512 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_quantized.py tests/test_simd_kernels.py tests/test_simd.py \
  tests/test_embedding_bag.py tests/test_embedding_bags.py tests/test_sgns.py \
  tests/test_config.py "$@"
