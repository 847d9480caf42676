#include "device_info.hpp"

#include <cuda_runtime.h>

#include <string>

#include "svoo/error.hpp"

namespace svoo::cuda::detail {

bool hopper_device() {
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return major == 9 && minor == 0;  // the sm_90a code runs on compute capability 9.0 only
  }();
  return ok;
}

void require_supported_device(const char* where) {
  static const int cc = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return -1;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return 10 * major + minor;
  }();
  require(cc >= 0, ErrorKind::unsupported, std::string(where) + ": no CUDA device is available");
  require(cc >= 80, ErrorKind::unsupported,
          std::string(where) + ": the CUDA backend needs compute capability 8.0 or newer (Ampere, Ada, Hopper), this "
                               "device has " + std::to_string(cc / 10) + "." + std::to_string(cc % 10));
}

int sm_count() {
  static const int sms = [] {
    int dev = 0, n = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    return n > 0 ? n : 1;
  }();
  return sms;
}

}  // namespace svoo::cuda::detail
