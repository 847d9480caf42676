// The safetensors file format (8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the data): how Q/K/V tensors, outputs, clusterings
// and anchors travel to and from svoo. Read and written: F32, F16, BF16, I32, I64.
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "svoo/tensor.hpp"

namespace svoo {

struct SafetensorsFile {
  std::vector<std::pair<std::string, HostTensor>> tensors;  // in file order
  std::map<std::string, std::string> metadata;              // "__metadata__"

  const HostTensor* find(const std::string& name) const noexcept;
  // Throws Error(invalid_argument) naming the missing tensor and the names present.
  const HostTensor& at(const std::string& name) const;
};

inline constexpr std::size_t kMaxSafetensorsHeader = 100u << 20;  // 100 MiB of JSON at most

// Parses a whole file image. Throws Error(format) with a clear message for: fewer than 8 bytes,
// a header length past the limit or past the end, invalid JSON or UTF-8, a header that is not an
// object, a duplicate name, an unknown dtype, a bad shape (negative, non-integer, element count
// overflow), data offsets that are not [begin, end] integers, out of range, of the wrong size for
// dtype x shape, overlapping or leaving holes in the data buffer, or non-string metadata.
SafetensorsFile parse_safetensors(std::span<const std::byte> bytes);
SafetensorsFile load_safetensors(const std::string& path);  // Error(io) if unreadable

// Serialises tensors (names must be unique and non-empty; header padded to 8 bytes).
std::vector<std::byte> serialize_safetensors(const SafetensorsFile& file);
void save_safetensors(const std::string& path, const SafetensorsFile& file);

}  // namespace svoo
