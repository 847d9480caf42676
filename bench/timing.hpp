// Benchmark helper: the median of CUDA-event timings of a callable, after one warm-up call.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "../tests/gpu/device_buffer.hpp"

namespace svoo::bench {

inline double median_ms(const std::function<void()>& fn, int reps = 7) {
  fn();
  test::cuda_ok(cudaDeviceSynchronize(), "warm-up");
  std::vector<float> t;
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    test::cuda_ok(cudaEventSynchronize(b), "timing");
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Writes the JSON rows collected by a benchmark ("[\n" + rows + "\n]\n"); false, with a message,
// when the file cannot be written.
inline bool write_json_rows(const std::string& path, const std::string& rows) {
  if (path.empty()) return true;
  FILE* f = std::fopen(path.c_str(), "w");
  const bool ok = f && std::fprintf(f, "[\n%s\n]\n", rows.c_str()) > 0;
  if (f) std::fclose(f);
  if (!ok) std::fprintf(stderr, "cannot write %s\n", path.c_str());
  return ok;
}

}  // namespace svoo::bench
