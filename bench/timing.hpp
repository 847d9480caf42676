// Benchmark helper: the median of CUDA-event timings of a callable, after one warm-up call.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
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

}  // namespace svoo::bench
