// The GPU checks' failure report: counts a failed condition in `counter` and prints where it is
// and why (printf-style), so that one run lists every failure instead of stopping at the first.
#pragma once

#include <cstdio>

#define SVOO_GPU_CHECK(counter, cond, ...)               \
  do {                                                   \
    if (!(cond)) {                                       \
      ++(counter);                                       \
      std::printf("  FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                          \
      std::printf("\n");                                 \
    }                                                    \
  } while (0)
