// libFuzzer target for the safetensors parser. A refusal (svoo::Error) is fine; a crash, a
// sanitizer report, another exception, or an accepted file that does not survive
// serialize -> parse unchanged is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "svoo/error.hpp"
#include "svoo/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  svoo::SafetensorsFile f;
  try {
    f = svoo::parse_safetensors(std::as_bytes(std::span(data, size)));
  } catch (const svoo::Error&) {
    return 0;
  }
  const svoo::SafetensorsFile g = svoo::parse_safetensors(svoo::serialize_safetensors(f));
  if (g.metadata != f.metadata || g.tensors.size() != f.tensors.size()) std::abort();
  for (std::size_t i = 0; i < f.tensors.size(); ++i) {
    const auto& [na, a] = f.tensors[i];
    const auto& [nb, b] = g.tensors[i];
    if (na != nb || a.dtype() != b.dtype() || a.shape() != b.shape() || a.nbytes() != b.nbytes()) std::abort();
    if (a.nbytes() && std::memcmp(a.bytes(), b.bytes(), a.nbytes()) != 0) std::abort();
  }
  return 0;
}
