#!/usr/bin/env bash
# Runs the test suite (CTest: unit tests and CLI checks; pytest: the Python package), then each
# parser fuzzer briefly over the committed corpus. Run scripts/setup.sh first.
#   SVOO_FUZZ_SECONDS=0 scripts/test.sh   skip the fuzzers
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build
ctest --test-dir build --output-on-failure -j 2
# The Python package's tests, against the installed package (run outside the source tree).
(cd /tmp && python3 -m pytest -q "$OLDPWD/python/tests")
if [ "${SVOO_FUZZ_SECONDS:-30}" != "0" ]; then
  bash fuzz/run.sh "${SVOO_FUZZ_SECONDS:-30}"
fi
