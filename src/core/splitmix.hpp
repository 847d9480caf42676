// Internal: a tiny, portable pseudo-random generator (SplitMix64). std:: distributions differ
// between standard libraries, so everything that must give the same draws on every platform
// (row samples, synthetic workloads) uses this instead.
#pragma once

#include <cstdint>

// Usable from CUDA kernels too, so the GPU draws exactly the CPU's anchors.
#if defined(__CUDACC__)
#define SVOO_HD __host__ __device__
#else
#define SVOO_HD
#endif

namespace svoo::detail {

class SplitMix64 {
 public:
  SVOO_HD explicit SplitMix64(std::uint64_t seed) noexcept : state_(seed) {}

  SVOO_HD std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, bound), bound > 0, without modulo bias (rejects the short top range).
  SVOO_HD std::uint64_t below(std::uint64_t bound) noexcept {
    const std::uint64_t reject_under = reject_below(bound);
    for (;;) {
      const std::uint64_t r = next();
      if (r >= reject_under) return r % bound;
    }
  }
  // below() rejects outputs under 2^64 mod bound (for bound < 2^32, a chance under 2^-32).
  SVOO_HD static std::uint64_t reject_below(std::uint64_t bound) noexcept { return (0 - bound) % bound; }

  // The output of the (i + 1)-th next() of a generator seeded with `seed`, without the i before
  // it (the state is a counter): lets a GPU draw a sequence in parallel.
  SVOO_HD static std::uint64_t output_at(std::uint64_t seed, std::uint64_t i) noexcept {
    SplitMix64 g(seed + i * 0x9e3779b97f4a7c15ULL);
    return g.next();
  }

  // Uniform in [0, 1) with 53 random bits.
  SVOO_HD double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

// Mixes several values into one seed, so that independent streams (per head, per purpose) do not
// overlap in any simple way.
SVOO_HD inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) noexcept {
  SplitMix64 g(a ^ (b * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL));
  g.next();
  return g.next();
}

}  // namespace svoo::detail
