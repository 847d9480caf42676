// libFuzzer target for the profile CSV parser. A refusal (svoo::Error) is fine; a crash, a
// sanitizer report, another exception or a failed round trip is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "svoo/error.hpp"
#include "svoo/profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  svoo::Profile p;
  try {
    p = svoo::parse_profile_csv(text, "fuzz");
  } catch (const svoo::Error&) {
    return 0;
  }
  // What was accepted must be written and read back to the same entries. A few bytes can
  // declare a grid of up to kMaxProfileEntries (4M) cells; walking that under ASan takes
  // seconds, so the round trip is checked on grids of up to 1M cells only.
  if (static_cast<std::int64_t>(p.steps()) * p.layers() * p.heads() > 1'000'000) return 0;
  const svoo::Profile q = svoo::parse_profile_csv(svoo::format_profile_csv(p), "round trip");
  if (q.size() != p.size() || q.has_stats() != p.has_stats()) std::abort();
  for (int s = 1; s <= p.steps(); ++s)
    for (int l = 0; l < p.layers(); ++l)
      for (int h = 0; h < p.heads(); ++h) {
        if (p.density(s, l, h) != q.density(s, l, h)) std::abort();
        const auto a = p.stats(s, l, h), b = q.stats(s, l, h);
        if (a.has_value() != b.has_value()) std::abort();
        if (a && (a->count != b->count || a->mean != b->mean || a->std != b->std || a->min != b->min ||
                  a->max != b->max))
          std::abort();
      }
  return 0;
}
