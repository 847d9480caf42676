// Internal: a small counter-free generator whose output is the same on every platform and standard
// library (std:: distributions are not), so seeds reproduce anchors and samples everywhere.
#pragma once

#include <cstdint>

namespace svoo::detail {

// splitmix64: one 64-bit state, full period, good enough statistics for sampling indices.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by multiply-shift (bias below 2^-64 * n, irrelevant here).
  std::uint64_t below(std::uint64_t n) noexcept {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }
  // Uniform in [0, 1).
  double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

// A seed for stream `index` of `seed` (e.g. one per head) that does not collide with neighbours.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t index) noexcept {
  SplitMix64 g(seed ^ (0xd1b54a32d192ed03ull * (index + 1)));
  return g.next();
}

}  // namespace svoo::detail
