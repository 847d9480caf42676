// The CPU density studies' layer (svoo_density_skip_study, svoo_density_interp_study): the layer of
// svoo_cuda_density_bench (Wan2.1-1.3B 720p, 12 heads x 75,600 tokens x 128) as fp32 Q and K, either
// the synthetic workload or standard normal entries.
#pragma once

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "svoo/synthetic.hpp"

namespace svoo::bench {

struct DensityStudyLayer {
  SyntheticLayer layer;       // its head kinds name the rows of a study's table
  int heads = 0;
  std::int64_t tokens = 0;
  std::vector<float> q, k;    // [heads, tokens, 128]
};

// The studies' --tau: strictly between 0 and 1 (CLI11's range admits both ends). False after
// naming the problem on stderr.
inline bool study_tau_ok(const char* study, double tau) {
  if (tau > 0.0 && tau < 1.0) return true;
  std::fprintf(stderr, "%s: --tau must lie strictly between 0 and 1 (got %g)\n", study, tau);
  return false;
}

inline DensityStudyLayer density_study_layer(const std::string& data, double tau) {
  SyntheticConfig sc;
  sc.heads = 12, sc.frames = 21, sc.height = 45, sc.width = 80, sc.calibration_rows = 64, sc.tau = tau;
  DensityStudyLayer out{make_synthetic_layer(sc), sc.heads, 0, {}, {}};
  out.tokens = out.layer.tokens();
  out.q.resize(static_cast<std::size_t>(out.heads * out.tokens * 128)), out.k.resize(out.q.size());
  if (data == "synthetic") {
    for (std::size_t i = 0; i < out.q.size(); ++i) out.q[i] = out.layer.q.get(static_cast<std::int64_t>(i));
    for (std::size_t i = 0; i < out.k.size(); ++i) out.k[i] = out.layer.k.get(static_cast<std::int64_t>(i));
  } else {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    for (auto& x : out.q) x = nd(rng);
    for (auto& x : out.k) x = nd(rng);
  }
  return out;
}

}  // namespace svoo::bench
