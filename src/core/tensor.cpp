#include "svoo/tensor.hpp"

#include <cmath>
#include <cstring>
#include <sstream>

#include "svoo/error.hpp"

namespace svoo {

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

const char* device_name(Device device) noexcept { return device == Device::cpu ? "cpu" : "cuda"; }

bool is_floating(DType dtype) noexcept {
  return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16;
}

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                                  Device device) {
  require(shape.size() >= 1 && shape.size() <= kMaxRank, ErrorKind::shape,
          "a tensor view has rank 1 to 4, got " + std::to_string(shape.size()));
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.rank = static_cast<int>(shape.size());
  int i = 0;
  for (auto e : shape) v.shape[i++] = e;
  std::int64_t stride = 1;
  for (int d = v.rank - 1; d >= 0; --d) {
    v.strides[d] = stride;
    stride *= v.shape[d];
  }
  return v;
}

std::int64_t TensorView::numel() const noexcept {
  std::int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= shape[d];
  return n;
}

bool TensorView::is_contiguous() const noexcept {
  std::int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != stride) return false;
    stride *= shape[d];
  }
  return true;
}

std::string TensorView::describe() const {
  std::ostringstream s;
  s << dtype_name(dtype) << "[";
  for (int d = 0; d < rank; ++d) s << (d ? ", " : "") << shape[d];
  s << "] strides [";
  for (int d = 0; d < rank; ++d) s << (d ? ", " : "") << strides[d];
  s << "] on " << device_name(device);
  return s.str();
}

float bf16_to_float(std::uint16_t bits) noexcept {
  std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::uint16_t float_to_bf16(float value) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &value, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<std::uint16_t>(u >> 16);
}

float f16_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      u = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::uint16_t float_to_f16(float value) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &value, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity (>= 65520)
  if (abs < 0x38800000u) {                        // subnormal or zero in f16
    if (abs < 0x33000000u) return sign;           // below half the smallest subnormal
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 113 - static_cast<int>(abs >> 23) + 13;  // 126 - exp, plus 10-bit alignment
    std::uint32_t result = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (result & 1u))) ++result;
    return sign | static_cast<std::uint16_t>(result);
  }
  std::uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | static_cast<std::uint16_t>(r >> 13);
}

float load_as_float(const void* data, DType dtype, std::int64_t offset) noexcept {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[offset];
    case DType::f16: return f16_to_float(static_cast<const std::uint16_t*>(data)[offset]);
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(data)[offset]);
    case DType::i32: return static_cast<float>(static_cast<const std::int32_t*>(data)[offset]);
    case DType::i64: return static_cast<float>(static_cast<const std::int64_t*>(data)[offset]);
  }
  return 0.0f;
}

void store_from_float(void* data, DType dtype, std::int64_t offset, float value) noexcept {
  switch (dtype) {
    case DType::f32: static_cast<float*>(data)[offset] = value; break;
    case DType::f16: static_cast<std::uint16_t*>(data)[offset] = float_to_f16(value); break;
    case DType::bf16: static_cast<std::uint16_t*>(data)[offset] = float_to_bf16(value); break;
    case DType::i32: static_cast<std::int32_t*>(data)[offset] = static_cast<std::int32_t>(value); break;
    case DType::i64: static_cast<std::int64_t*>(data)[offset] = static_cast<std::int64_t>(value); break;
  }
}

HostTensor::HostTensor(DType dtype, std::vector<std::int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  std::int64_t n = 1;
  for (auto e : shape_) {
    require(e >= 0, ErrorKind::shape, "negative extent " + std::to_string(e));
    n *= e;
  }
  bytes_.assign(static_cast<std::size_t>(n) * dtype_size(dtype_), std::byte{0});
}

std::int64_t HostTensor::numel() const noexcept {
  std::int64_t n = 1;
  for (auto e : shape_) n *= e;
  return n;
}

TensorView HostTensor::view() {
  require(!shape_.empty() && shape_.size() <= static_cast<std::size_t>(kMaxRank), ErrorKind::shape,
          "only tensors of rank 1 to 4 have views, this one has rank " + std::to_string(shape_.size()));
  TensorView v;
  v.data = bytes_.data();
  v.dtype = dtype_;
  v.rank = static_cast<int>(shape_.size());
  std::int64_t stride = 1;
  for (int d = v.rank - 1; d >= 0; --d) {
    v.shape[d] = shape_[d];
    v.strides[d] = stride;
    stride *= shape_[d];
  }
  return v;
}

TensorView HostTensor::view() const { return const_cast<HostTensor*>(this)->view(); }

}  // namespace svoo
