// Synthetic captures (see svoo/synthetic_capture.hpp).
#include "svoo/synthetic_capture.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/splitmix.hpp"
#include "svoo/error.hpp"

namespace svoo {

double synthetic_capture_target(int step, int layer, int head, int steps) {
  // A hash of (layer, head) places the head in [0.04, 0.5] on a log scale, like the spread of
  // the reference profiles; later steps get slightly denser (up to +20 %).
  detail::SplitMix64 g(0x5eedULL * 1000003ULL + static_cast<std::uint64_t>(layer) * 7919ULL + head);
  const double base = 0.04 * std::pow(0.5 / 0.04, g.uniform());
  const double trend = steps > 1 ? 1.0 + 0.2 * (step - 1) / (steps - 1) : 1.0;
  return std::min(1.0, base * trend);
}

SafetensorsFile make_synthetic_capture(const SyntheticCaptureConfig& c) {
  require(c.steps >= 1 && c.layers >= 1, ErrorKind::invalid_argument,
          "a synthetic capture needs steps >= 1 and layers >= 1, got " + std::to_string(c.steps) + " and " +
              std::to_string(c.layers));
  require(c.jitter >= 0 && c.jitter <= 3, ErrorKind::invalid_argument,
          "jitter must be in [0, 3], got " + std::to_string(c.jitter));
  SafetensorsFile f;
  detail::SplitMix64 jitter_rng(c.layer.seed * 0x9e3779b97f4a7c15ULL + 0x6a17ULL);
  for (int s = 1; s <= c.steps; ++s)
    for (int l = 0; l < c.layers; ++l) {
      SyntheticConfig lc = c.layer;
      lc.seed = c.layer.seed * 1000003ULL + static_cast<std::uint64_t>(s) * 1009ULL + l;  // new content per slot
      lc.target_density.resize(lc.heads);
      for (int h = 0; h < lc.heads; ++h) {
        const double u = 2.0 * jitter_rng.uniform() - 1.0;
        lc.target_density[h] = std::clamp(synthetic_capture_target(s, l, h, c.steps) * std::exp(c.jitter * u), 0.005, 1.0);
      }
      SyntheticLayer layer = make_synthetic_layer(lc);
      const std::string tag = ".s" + std::to_string(s) + ".l" + std::to_string(l);
      f.tensors.emplace_back("q" + tag, std::move(layer.q));
      f.tensors.emplace_back("k" + tag, std::move(layer.k));
    }
  f.metadata = {{"model", "svoo-synthetic"},
                {"seed", std::to_string(c.layer.seed)},
                {"jitter", std::to_string(c.jitter)}};
  return f;
}

}  // namespace svoo
