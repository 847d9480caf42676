// Errors: every failure svoo reports is an svoo::Error whose kind names the class of problem
// (shape, dtype, file format, ...) and whose message names the offending argument or byte.
#pragma once

#include <stdexcept>
#include <string>

namespace svoo {

enum class ErrorKind {
  invalid_argument,  // a value out of its documented range (a count, a probability, an index)
  shape,             // tensor ranks or extents that do not fit together
  dtype,             // an element type the entry point does not accept
  device,            // data on a device the backend cannot read
  stride,            // a memory layout the entry point cannot read or write
  non_finite,        // NaN or infinity where finite numbers are required
  format,            // a file or buffer that is corrupt, truncated or inconsistent
  io,                // the operating system refused a read or write
  unsupported,       // valid, but not implemented by this build or backend
};

const char* to_string(ErrorKind kind) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

// Throws Error(kind, message). The message should say what was expected and what was found.
[[noreturn]] void fail(ErrorKind kind, const std::string& message);

inline void require(bool condition, ErrorKind kind, const std::string& message) {
  if (!condition) fail(kind, message);
}

}  // namespace svoo
