// Test helpers: random tensors and literal (brute-force, double precision) formulations of the
// spec, written for clarity rather than speed, to check the optimised backends against.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "svoo/clustering.hpp"
#include "svoo/measures.hpp"
#include "svoo/tensor.hpp"

namespace svoo::test {

inline HostTensor random_tensor(DType dtype, std::vector<std::int64_t> shape, std::uint32_t seed, float stddev = 1.0f) {
  HostTensor t(dtype, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, dist(rng));
  return t;
}

// Element (h, n, d) of a [H, N, D] view as double.
inline double at(const TensorView& t, std::int64_t h, std::int64_t n, std::int64_t d) {
  return load_as_float(t.data, t.dtype, h * t.strides[0] + n * t.strides[1] + d * t.strides[2]);
}

// Literal masked attention: query n of head h attends to key m iff mask(h, n, m).
template <class Mask>
std::vector<double> masked_attention(const TensorView& q, const TensorView& k, const TensorView& v, Mask mask,
                                     std::vector<double>* lse = nullptr) {
  const std::int64_t H = q.shape[0], Nq = q.shape[1], Nk = k.shape[1], D = q.shape[2];
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> out(static_cast<std::size_t>(H * Nq * D), 0.0);
  if (lse) lse->assign(static_cast<std::size_t>(H * Nq), -INFINITY);
  std::vector<double> s(static_cast<std::size_t>(Nk));
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t n = 0; n < Nq; ++n) {
      double m = -INFINITY;
      for (std::int64_t j = 0; j < Nk; ++j) {
        if (!mask(h, n, j)) continue;
        double dot = 0;
        for (std::int64_t d = 0; d < D; ++d) dot += at(q, h, n, d) * at(k, h, j, d);
        s[j] = dot * scale;
        m = std::max(m, s[j]);
      }
      if (m == -INFINITY) continue;
      double sum = 0;
      for (std::int64_t j = 0; j < Nk; ++j)
        if (mask(h, n, j)) sum += std::exp(s[j] - m);
      for (std::int64_t j = 0; j < Nk; ++j) {
        if (!mask(h, n, j)) continue;
        const double p = std::exp(s[j] - m) / sum;
        for (std::int64_t d = 0; d < D; ++d) out[(h * Nq + n) * D + d] += p * at(v, h, j, d);
      }
      if (lse) (*lse)[h * Nq + n] = m + std::log(sum);
    }
  return out;
}

// max |a - b| / max |b| over a float tensor and a double reference.
inline double rel_max_error(const HostTensor& a, const std::vector<double>& ref) {
  double err = 0, mag = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    err = std::max(err, std::fabs(a.get(i) - ref[i]));
    mag = std::max(mag, std::fabs(ref[i]));
  }
  return err / mag;
}

// A row of n scores drawn from N(0, spread^2) (rounded to integers with ties: many equal scores),
// for the device tau-density's arithmetic on the host.
inline std::vector<float> normal_scores(std::int64_t n, float spread, unsigned seed, bool ties = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, spread);
  std::vector<float> s(static_cast<std::size_t>(n));
  for (auto& x : s) x = ties ? std::round(dist(rng)) : dist(rng);
  return s;
}

// Rows of scores for the device density searches' host tests: n scores from N(0, spread^2),
// integers where ties; near-uniform, normal and very peaked rows, tiny and 720p-long ones.
struct ScoreRows {
  std::int64_t n;
  float spread;
  bool ties;
};
inline std::vector<ScoreRows> density_test_rows() {
  return {{64, 1.f, false},     {1000, 0.05f, false}, {4097, 3.f, false}, {20000, 12.f, false},
          {75600, 0.2f, false}, {75600, 8.f, false},  {5000, 2.f, true},  {3, 1.f, false},
          {75600, 30.f, false}, {129, 5.f, false},    {30000, 60.f, false}};
}

// The spec's tau-count of one row of scores: probabilities relative to the row max,
// p = 2^((s - max) sl2) in fp32.
inline std::int64_t spec_tau_count(const std::vector<float>& s, float sl2, double tau) {
  const float row_max = *std::max_element(s.begin(), s.end());
  std::vector<float> p(s.size());
  for (std::size_t j = 0; j < s.size(); ++j) p[j] = std::exp2((s[j] - row_max) * sl2);
  return tau_count(p.data(), static_cast<std::int64_t>(p.size()), tau);
}

}  // namespace svoo::test
