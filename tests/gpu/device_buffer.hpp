// Test/bench helpers: a device copy of a HostTensor, and a typed device array, freed on scope exit.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "svoo/tensor.hpp"

namespace svoo::test {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

class DeviceTensor {
 public:
  explicit DeviceTensor(const HostTensor& h) : host_shape_(h.shape()), dtype_(h.dtype()) {
    bytes_ = h.nbytes();
    cuda_ok(cudaMalloc(&ptr_, bytes_ ? bytes_ : 16), "cudaMalloc");
    cuda_ok(cudaMemcpy(ptr_, h.bytes(), bytes_, cudaMemcpyHostToDevice), "upload");
  }
  DeviceTensor(DType dtype, std::vector<std::int64_t> shape) : host_shape_(std::move(shape)), dtype_(dtype) {
    std::int64_t n = 1;
    for (auto e : host_shape_) n *= e;
    bytes_ = static_cast<std::size_t>(n) * dtype_size(dtype);
    cuda_ok(cudaMalloc(&ptr_, bytes_ ? bytes_ : 16), "cudaMalloc");
  }
  ~DeviceTensor() { cudaFree(ptr_); }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  TensorView view() const {
    TensorView v;
    v.data = ptr_;
    v.dtype = dtype_;
    v.device = Device::cuda;
    v.rank = static_cast<int>(host_shape_.size());
    std::int64_t stride = 1;
    for (int d = v.rank - 1; d >= 0; --d) {
      v.shape[d] = host_shape_[d];
      v.strides[d] = stride;
      stride *= host_shape_[d];
    }
    return v;
  }
  HostTensor download() const {
    HostTensor h(dtype_, host_shape_);
    cuda_ok(cudaMemcpy(h.bytes(), ptr_, bytes_, cudaMemcpyDeviceToHost), "download");
    return h;
  }
  void* data() const { return ptr_; }

 private:
  std::vector<std::int64_t> host_shape_;
  DType dtype_;
  std::size_t bytes_ = 0;
  void* ptr_ = nullptr;
};

// n elements of T on the device (uninitialised), or a copy of a host vector.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t n) : n_(n) { cuda_ok(cudaMalloc(&ptr_, n ? n * sizeof(T) : 16), "cudaMalloc"); }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) {
    cuda_ok(cudaMemcpy(ptr_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* data() const { return ptr_; }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cuda_ok(cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return h;
  }

 private:
  std::size_t n_;
  T* ptr_ = nullptr;
};

}  // namespace svoo::test
