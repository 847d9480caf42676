// Whole-file reads and writes shared by the format loaders, with errors that name the path and
// the operating system's reason (kind io).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace svoo::detail {

// Reads all of `path`. A file larger than `max_bytes` is refused with Error(format) before it is
// read, so a loader cannot be made to allocate without bound.
std::vector<std::byte> read_file(const std::string& path, std::size_t max_bytes);

// Writes `bytes` to `path` (created or truncated); any failure, including on close, is Error(io).
void write_file(const std::string& path, std::span<const std::byte> bytes);

}  // namespace svoo::detail
