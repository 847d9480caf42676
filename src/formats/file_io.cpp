#include "formats/file_io.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "svoo/error.hpp"

namespace svoo::detail {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

[[noreturn]] void fail_io(const std::string& what, const std::string& path, int err) {
  fail(ErrorKind::io, what + " '" + path + "': " + std::strerror(err));
}

}  // namespace

std::vector<std::byte> read_file(const std::string& path, std::size_t max_bytes) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) fail_io("cannot open", path, errno);
  struct stat st {};
  if (fstat(fileno(f.get()), &st) != 0) fail_io("cannot stat", path, errno);
  // fopen succeeds on a directory on Linux; say so instead of failing later with EISDIR.
  if (S_ISDIR(st.st_mode)) fail_io("cannot read", path, EISDIR);
  if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) > max_bytes)
    fail(ErrorKind::format, "'" + path + "' has " + std::to_string(st.st_size) + " bytes, more than the " +
                                std::to_string(max_bytes) + " this loader accepts");

  std::vector<std::byte> data;
  if (S_ISREG(st.st_mode)) data.reserve(static_cast<std::size_t>(st.st_size));
  // Read in chunks until EOF: the size from fstat is only a hint (pipes, files that grow).
  std::byte chunk[1 << 16];
  for (;;) {
    const std::size_t n = std::fread(chunk, 1, sizeof chunk, f.get());
    if (n > 0) {
      if (data.size() + n > max_bytes)
        fail(ErrorKind::format, "'" + path + "' is larger than the " + std::to_string(max_bytes) +
                                    " bytes this loader accepts");
      data.insert(data.end(), chunk, chunk + n);
    }
    if (n < sizeof chunk) {
      if (std::ferror(f.get())) fail_io("cannot read", path, errno);
      break;
    }
  }
  return data;
}

void write_file(const std::string& path, std::span<const std::byte> bytes) {
  FilePtr f(std::fopen(path.c_str(), "wb"));
  if (!f) fail_io("cannot create", path, errno);
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
    fail_io("cannot write", path, errno);
  // Close explicitly: buffered data is flushed here, and a full disk is reported only now.
  if (std::fclose(f.release()) != 0) fail_io("cannot write", path, errno);
}

}  // namespace svoo::detail
