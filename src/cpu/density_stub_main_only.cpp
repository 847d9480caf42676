// TEMPORARY (main branch only, until the density module lands): sample_rows for recall.
#include <algorithm>
#include <numeric>
#include "svoo/measures.hpp"
#include "../core/random.hpp"
namespace svoo {
std::vector<std::int64_t> sample_rows(std::int64_t tokens, const RowSample& sample) {
  std::vector<std::int64_t> all(static_cast<std::size_t>(tokens));
  std::iota(all.begin(), all.end(), 0);
  if (sample.rows <= 0 || sample.rows >= tokens) return all;
  detail::SplitMix64 rng(sample.seed);
  for (std::int64_t i = 0; i < sample.rows; ++i) std::swap(all[i], all[i + rng.below(tokens - i)]);
  all.resize(sample.rows);
  std::sort(all.begin(), all.end());
  return all;
}
}  // namespace svoo
