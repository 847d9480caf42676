#!/usr/bin/env bash
# Packs what python/tests/gpu/check_cuda.py needs on a lent GPU machine (Python 3.12, torch, no
# svoo, no diffusers, no network) into DEST/bundle.tar.xz: a cp312 svoo wheel built from this
# checkout, the wheels of diffusers and of its dependencies the image lacks (from WHEELS, fetched
# with `pip download --only-binary=:all: --python-version 3.12 ...`; huggingface_hub must be 1.x:
# the image's transformers refuses 2.x), and OpenBLAS with its runtime. Then copy check_cuda.py
# next to it and run bench/python_device_run.sh there.
#   bench/python_carry.sh DEST WHEELS_DIR [PYTHON3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$1 wheels=$2 py=${3:-python3.12}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/whl" "$dest"
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} "$py" -m pip wheel -q --no-build-isolation --no-deps \
  -w "$stage/whl" -C build-dir=build/pyshared .
cp "$wheels"/*.whl "$stage/whl/"
so=$(find build/pyshared -name '_svoo*cpython-312*.so' | head -1)
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libgomp.so.1; do
  path=$(ldd "$so" | awk -v l="$lib" '$1 == l {print $3}')
  [ -n "$path" ] && cp -L "$path" "$stage/lib/"
done
tar -C "$stage" -cf - . | xz -T2 -6 >"$dest/bundle.tar.xz"
cp python/tests/gpu/check_cuda.py "$dest/"
du -sh "$dest/bundle.tar.xz"
