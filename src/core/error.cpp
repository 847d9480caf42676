#include "svoo/error.hpp"

namespace svoo {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::invalid_argument: return "invalid argument";
    case ErrorKind::shape: return "shape error";
    case ErrorKind::dtype: return "dtype error";
    case ErrorKind::device: return "device error";
    case ErrorKind::stride: return "stride error";
    case ErrorKind::non_finite: return "non-finite value";
    case ErrorKind::format: return "format error";
    case ErrorKind::io: return "I/O error";
    case ErrorKind::unsupported: return "unsupported";
  }
  return "error";
}

Error::Error(ErrorKind kind, const std::string& message)
    : std::runtime_error(std::string("svoo: ") + to_string(kind) + ": " + message), kind_(kind) {}

void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

}  // namespace svoo
