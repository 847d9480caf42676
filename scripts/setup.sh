#!/usr/bin/env bash
# Installs what svoo needs on Debian/Ubuntu, builds everything into build/, installs the Python
# package (pip install .) and runs `svoo demo`.
#   scripts/setup.sh            install, build, demo
#   SVOO_SKIP_DEMO=1 scripts/setup.sh   install and build only
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config libopenblas-openmp-dev libcli11-dev nlohmann-json3-dev
          libgtest-dev libgmock-dev clang libclang-rt-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "svoo setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
# The Python package (same CMake project, nanobind extension), with what its tests need.
# torch (about 1 minute and 5 GB from PyPI) and diffusers are needed only by svoo.torch,
# svoo.diffusers and their tests.
python3 -m pip install -q --disable-pip-version-check nanobind scikit-build-core numpy pytest torch diffusers
python3 -m pip install -q --disable-pip-version-check --no-build-isolation .
if [ -z "${SVOO_SKIP_DEMO:-}" ]; then
  ./build/svoo demo
fi
