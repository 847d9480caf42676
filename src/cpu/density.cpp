// tau-density (spec 1): row sampling, the per-row count c_i and the per-head density.
//
// tau_count avoids a full sort with a radix select on the float bit patterns: for non-negative
// floats the bit pattern (as an unsigned integer) orders like the value, so a histogram over the
// top bits, walked from the largest bucket, locates the bucket in which the cumulative mass
// crosses tau * total; only that bucket's elements are refined on the next bits. After the last
// level every element left has the same value, so ties are resolved by counting copies of one
// value, which is what any sorted order would give.
//
// Accumulation: sums are in double. The total is summed in index order; partial sums are summed
// bucket by bucket, so they may differ from a sorted cumulative sum in the last double bits. The
// count therefore equals the sorted-cumsum count except where a partial sum lies within double
// rounding (~1e-16 relative) of the threshold. tau == 1 is defined as "all the mass": the number
// of positive entries (a floating-point cumsum may lose tiny tail values, or end a rounding step
// short of a differently rounded total; the exact-arithmetic answer is the positive count).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <omp.h>

#include "core/splitmix.hpp"
#include "cpu/gemm.hpp"
#include "cpu/head_buffer.hpp"
#include "svoo/attention_shape.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"

namespace svoo {
namespace {

void check_tau(double tau, const char* where) {
  require(tau > 0.0 && tau <= 1.0, ErrorKind::invalid_argument,
          std::string(where) + ": tau must be in (0, 1], got " + std::to_string(tau));
}

struct Bucket {
  double mass = 0.0;
  std::int64_t count = 0;
};

// One radix level: the key of a value is (bits >> shift) & mask.
struct Level {
  int shift;
  std::uint32_t mask;
};
// bits 30..20 (sign is 0), 19..8, 7..0: after the last level a bucket holds one value.
constexpr Level kLevels[3] = {{20, 0x7ffu}, {8, 0xfffu}, {0, 0xffu}};

inline std::uint32_t bits_of(float x) {
  std::uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b & 0x7fffffffu;  // -0.0 counts as 0.0
}

// Per-thread scratch, so tau_count allocates nothing after its first calls on a thread.
struct Scratch {
  std::vector<Bucket> hist;
  std::vector<float> cand, next;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

std::int64_t tau_count(const float* probs, std::int64_t n, double tau) {
  check_tau(tau, "tau_count");
  require(n >= 0, ErrorKind::invalid_argument, "tau_count: n must be >= 0, got " + std::to_string(n));
  if (n == 0) return 0;
  require(probs != nullptr, ErrorKind::invalid_argument, "tau_count: probs is null");

  Scratch& s = scratch();
  s.hist.assign(kLevels[0].mask + 1, Bucket{});
  // Level 0 also validates, totals and counts positives.
  double total = 0.0;
  std::int64_t positives = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float x = probs[i];
    if (!(x >= 0.0f) || x == std::numeric_limits<float>::infinity()) {
      fail(ErrorKind::invalid_argument, "tau_count: entry " + std::to_string(i) +
                                            " is negative, NaN or infinite (" + std::to_string(x) + ")");
    }
    total += x;
    positives += x > 0.0f;
    Bucket& b = s.hist[bits_of(x) >> kLevels[0].shift];
    b.mass += x;
    ++b.count;
  }
  if (tau == 1.0) return std::max<std::int64_t>(positives, 1);
  const double threshold = tau * total;

  double above = 0.0;         // mass of the elements known to be larger than the candidates
  std::int64_t taken = 0;     // their number
  bool all_of_row = true;     // candidates are still the whole row (no copy made yet)
  for (int lv = 0; lv < 3; ++lv) {
    const Level L = kLevels[lv];
    if (lv > 0) {
      s.hist.assign(L.mask + 1, Bucket{});
      for (float x : s.cand) {
        Bucket& b = s.hist[(bits_of(x) >> L.shift) & L.mask];
        b.mass += x;
        ++b.count;
      }
    }
    // Walk buckets from the largest values down to the one where the mass crosses the threshold.
    std::int64_t key = -1;
    for (std::int64_t j = L.mask; j >= 0; --j) {
      const Bucket& b = s.hist[j];
      if (b.count == 0) continue;
      if (above + b.mass >= threshold) {
        key = j;
        break;
      }
      above += b.mass;
      taken += b.count;
    }
    // Rounding can leave the threshold (nearly tau * total, tau just below 1) unreached: then
    // every positive entry is needed.
    if (key < 0) return std::max<std::int64_t>(positives, 1);
    if (lv == 2) {
      // One value left: add copies one at a time, as a sorted cumulative sum would.
      const std::uint32_t vbits = (bits_of(s.cand.front()) & ~L.mask) | static_cast<std::uint32_t>(key);
      float v;
      std::memcpy(&v, &vbits, sizeof v);
      const std::int64_t copies = s.hist[key].count;
      for (std::int64_t c = 1; c <= copies; ++c) {
        above += v;
        if (above >= threshold) return taken + c;
      }
      return taken + copies;  // crossed in the bucket sum but not one by one: rounding
    }
    // Keep the boundary bucket's elements as the next candidates.
    s.next.clear();
    const std::uint32_t k = static_cast<std::uint32_t>(key);
    if (all_of_row) {
      for (std::int64_t i = 0; i < n; ++i)
        if ((bits_of(probs[i]) >> L.shift) == k) s.next.push_back(probs[i]);
      all_of_row = false;
    } else {
      for (float x : s.cand)
        if (((bits_of(x) >> L.shift) & L.mask) == k) s.next.push_back(x);
    }
    std::swap(s.cand, s.next);
  }
  return std::max<std::int64_t>(positives, 1);  // not reached
}

std::vector<std::int64_t> sample_rows(std::int64_t tokens, const RowSample& sample) {
  require(tokens >= 0, ErrorKind::invalid_argument, "sample_rows: tokens must be >= 0, got " + std::to_string(tokens));
  require(sample.rows >= 0, ErrorKind::invalid_argument,
          "sample_rows: rows must be >= 0, got " + std::to_string(sample.rows));
  std::vector<std::int64_t> out;
  if (sample.rows == 0 || sample.rows >= tokens) {
    out.resize(static_cast<std::size_t>(tokens));
    std::iota(out.begin(), out.end(), std::int64_t{0});
    return out;
  }
  // Floyd's algorithm: `rows` distinct indices, every subset equally likely, rows draws.
  detail::SplitMix64 rng(detail::mix_seed(sample.seed, 0x5a4d706c65ULL));
  std::set<std::int64_t> chosen;
  for (std::int64_t j = tokens - sample.rows; j < tokens; ++j) {
    const auto t = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(j) + 1));
    chosen.insert(chosen.count(t) ? j : t);
  }
  return {chosen.begin(), chosen.end()};
}

namespace {

constexpr std::int64_t kRowBlock = 32;  // query rows whose scores are computed by one product

// Sum of c_i over rows [r0, r1) of `rows`: scores of the block by one GEMM, then an in-place
// unnormalised softmax (max subtracted) and the count per row.
double count_block(const float* qbuf, const float* kbuf, const std::vector<std::int64_t>& rows, std::int64_t r0,
                   std::int64_t r1, std::int64_t nk, std::int64_t dim, double tau, std::vector<float>& qrows,
                   std::vector<float>& scores) {
  const std::int64_t m = r1 - r0;
  qrows.resize(static_cast<std::size_t>(m * dim));
  scores.resize(static_cast<std::size_t>(m * nk));
  for (std::int64_t r = 0; r < m; ++r)
    std::memcpy(&qrows[r * dim], qbuf + rows[r0 + r] * dim, sizeof(float) * dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  cpu::gemm_nt(m, nk, dim, scale, qrows.data(), dim, kbuf, dim, 0.0f, scores.data(), nk);
  double sum = 0.0;
  for (std::int64_t r = 0; r < m; ++r) {
    float* p = &scores[r * nk];
    const float mx = *std::max_element(p, p + nk);
    for (std::int64_t j = 0; j < nk; ++j) p[j] = std::exp(p[j] - mx);
    sum += static_cast<double>(tau_count(p, nk, tau));
  }
  return sum;
}

}  // namespace

std::vector<double> tau_density(const TensorView& q, const TensorView& k, double tau, const RowSample& sample) {
  check_tau(tau, "tau_density");
  const AttentionShape sh = check_qkv(q, k, nullptr, Device::cpu, "tau_density");
  const std::vector<std::int64_t> rows = sample_rows(sh.q_tokens, sample);
  const auto nrows = static_cast<std::int64_t>(rows.size());
  const std::int64_t nk = sh.k_tokens, dim = sh.dim;
  std::vector<double> density(static_cast<std::size_t>(sh.heads), 0.0);

  // Enough heads to keep every thread busy: one head per thread. Otherwise heads in turn, row
  // blocks in parallel. Either way each thread's BLAS call runs single-threaded.
  const bool per_head = sh.heads >= omp_get_max_threads();
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(sh.heads));

  auto run_head = [&](std::int64_t h, bool parallel_rows) {
    std::vector<float> qbuf, kbuf;
    try {
      qbuf = cpu::gather_head(q, h, "q");
      kbuf = cpu::gather_head(k, h, "k");
    } catch (...) {
      errors[h] = std::current_exception();
      return;
    }
    const std::int64_t blocks = (nrows + kRowBlock - 1) / kRowBlock;
    double total = 0.0;
#pragma omp parallel for schedule(dynamic) reduction(+ : total) if (parallel_rows)
    for (std::int64_t b = 0; b < blocks; ++b) {
      thread_local std::vector<float> qrows, scores;
      const std::int64_t r0 = b * kRowBlock, r1 = std::min(nrows, r0 + kRowBlock);
      total += count_block(qbuf.data(), kbuf.data(), rows, r0, r1, nk, dim, tau, qrows, scores);
    }
    density[h] = total / static_cast<double>(nrows) / static_cast<double>(nk);
  };

  if (per_head) {
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t h = 0; h < sh.heads; ++h) run_head(h, false);
  } else {
    for (std::int64_t h = 0; h < sh.heads; ++h) run_head(h, true);
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);  // the lowest head's error, whatever the thread schedule
  return density;
}

}  // namespace svoo
