// Internal to the CUDA microbenchmarks (bench/*.cu): a runtime call's error as an exception that
// names the call, and the current device's name and SM count, which their tables start with.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace svoo::bench {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

struct Device {
  std::string name;
  int sms = 0;
};

inline Device current_device() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  return {prop.name, prop.multiProcessorCount};
}

}  // namespace svoo::bench
