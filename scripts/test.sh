#!/usr/bin/env bash
# Runs the test suite (CTest: unit tests and CLI checks), then each parser fuzzer briefly over the
# committed corpus. Run scripts/setup.sh first.
#   SVOO_FUZZ_SECONDS=0 scripts/test.sh   skip the fuzzers
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build
ctest --test-dir build --output-on-failure -j 2
if [ "${SVOO_FUZZ_SECONDS:-30}" != "0" ]; then
  bash fuzz/run.sh "${SVOO_FUZZ_SECONDS:-30}"
fi
