# Sourced by the ci/*.sh stages: make_venv DIR builds a throwaway venv (never the
# CI venv) with what an embtable build and the test suite need.
make_venv() {
  local dir="$1"
  python3 -m venv --clear --system-site-packages "$dir"
  "$dir/bin/python" -m pip install -q numpy pytest hypothesis "scikit-build-core>=0.10" "pybind11>=2.12"
}

# install_embtable VENV BUILD_DIR [extra pip -C options...]: build and install this checkout.
install_embtable() {
  local venv="$1" build_dir="$2"
  shift 2
  "$venv/bin/python" -m pip install -q --no-build-isolation --force-reinstall --no-deps \
    -Cbuild-dir="$build_dir" "$@" .
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
