// Non-owning tensor views (pointer, dtype, device, shape, strides) and a small owning host
// tensor. Kernels take views so that callers (PyTorch, files, tests) keep their own memory.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace svoo {

enum class DType : std::uint8_t { f32, f16, bf16, i32, i64 };
enum class Device : std::uint8_t { cpu, cuda };

std::size_t dtype_size(DType dtype) noexcept;
const char* dtype_name(DType dtype) noexcept;  // "f32", "f16", "bf16", "i32", "i64"
const char* device_name(Device device) noexcept;
bool is_floating(DType dtype) noexcept;

inline constexpr int kMaxRank = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};    // extents, shape[0..rank)
  std::array<std::int64_t, kMaxRank> strides{};  // in elements, not bytes

  // A row-major contiguous view.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               Device device = Device::cpu);

  std::int64_t numel() const noexcept;
  bool is_contiguous() const noexcept;
  std::string describe() const;  // e.g. "bf16[12, 4096, 128] strides [524288, 128, 1] on cpu"
};

// Number conversions for the 16-bit formats (round to nearest even, NaN kept as NaN).
float bf16_to_float(std::uint16_t bits) noexcept;
std::uint16_t float_to_bf16(float value) noexcept;
float f16_to_float(std::uint16_t bits) noexcept;
std::uint16_t float_to_f16(float value) noexcept;

// Reads element `offset` (in elements) of a floating view's buffer as float.
float load_as_float(const void* data, DType dtype, std::int64_t offset) noexcept;
// Writes `value`, rounded to `dtype`, at element `offset`.
void store_from_float(void* data, DType dtype, std::int64_t offset, float value) noexcept;

// An owning, contiguous tensor in host memory.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, std::vector<std::int64_t> shape);  // zero-filled

  DType dtype() const noexcept { return dtype_; }
  const std::vector<std::int64_t>& shape() const noexcept { return shape_; }
  std::int64_t numel() const noexcept;
  std::size_t nbytes() const noexcept { return bytes_.size(); }
  std::byte* bytes() noexcept { return bytes_.data(); }
  const std::byte* bytes() const noexcept { return bytes_.data(); }
  template <class T> T* data() noexcept { return reinterpret_cast<T*>(bytes_.data()); }
  template <class T> const T* data() const noexcept { return reinterpret_cast<const T*>(bytes_.data()); }

  TensorView view();
  TensorView view() const;  // a view whose data must not be written through

  // Element access for floating tensors (converts); index is the flat row-major index.
  float get(std::int64_t flat) const noexcept { return load_as_float(bytes_.data(), dtype_, flat); }
  void set(std::int64_t flat, float v) noexcept { store_from_float(bytes_.data(), dtype_, flat, v); }

 private:
  DType dtype_ = DType::f32;
  std::vector<std::int64_t> shape_;
  std::vector<std::byte> bytes_;
};

}  // namespace svoo
