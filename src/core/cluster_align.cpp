// Query-cluster alignment (ClusterConfig::query_align): query clusters resized to multiples of the
// sparse kernel's row chunk by moving a few rows to one of their next-best clusters.
//
// Why: the Hopper attention kernel computes a query cluster in 128-row items of two 64-row chunks
// (wgmma's M), so a cluster's last item is partly empty work: 12 % of the kernel's modelled time
// at 720p and 23 % at 480p (svoo_work_study). Moving the rows of the smallest remainders to
// clusters that have room removes that work, at the price of those rows attending to a
// neighbouring cluster's keys (svoo_work_study --align --recall-rows measures both).
//
// Passes (ClusterConfig::align_passes): at 480p the clusters hold ~128 rows, more rows would shed
// than the takers have room for, and a shedding cluster that cannot place every row keeps them all:
// one pass leaves 17.7 % of the items' rows empty. Each later pass lowers the bar for taking
// (alignment_take_above), so that the fuller of the clusters left behind take the rows of the
// emptier ones.
#include <algorithm>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "svoo/clustering.hpp"
#include "svoo/error.hpp"

namespace svoo {

std::int64_t empty_chunk_rows(std::span<const std::int32_t> sizes, int align) {
  require(align >= 1, ErrorKind::invalid_argument, "alignment must be >= 1, got " + std::to_string(align));
  std::int64_t empty = 0;
  for (const std::int32_t s : sizes) empty += (align - s % align) % align;
  return empty;
}

int alignment_take_above(int align, int pass) { return std::max(1, align / 2 - pass * (align / 16)); }

std::vector<std::uint8_t> alignment_takers(std::span<const std::int32_t> sizes, int align, int take_above) {
  require(align >= 2 && take_above >= 1 && take_above <= align / 2, ErrorKind::invalid_argument,
          "alignment must be >= 2 with a taking bar in [1, align / 2], got " + std::to_string(align) + " and " +
              std::to_string(take_above));
  std::vector<std::uint8_t> takes(sizes.size());
  for (std::size_t j = 0; j < sizes.size(); ++j) takes[j] = sizes[j] % align > take_above ? 1 : 0;
  return takes;
}

std::int64_t align_clusters(std::span<std::int32_t> labels, int clusters, int align, int e,
                            std::span<const std::int32_t> candidates, std::span<const float> costs, int take_above) {
  const std::int64_t n = static_cast<std::int64_t>(labels.size());
  require(clusters >= 1 && align >= 2 && align <= 256 && e >= 1 && take_above >= 1 && take_above <= align / 2,
          ErrorKind::invalid_argument,
          "alignment needs clusters >= 1, align in [2, 256], at least 1 candidate a row and a taking bar in [1, "
          "align / 2], got " +
              std::to_string(clusters) + ", " + std::to_string(align) + ", " + std::to_string(e) + ", " +
              std::to_string(take_above));
  require(candidates.size() == static_cast<std::size_t>(n) * e && costs.size() == candidates.size(),
          ErrorKind::shape, "alignment candidates and costs must hold rows x " + std::to_string(e) + " entries");
  std::vector<std::int32_t> size(clusters, 0);
  for (const std::int32_t l : labels) {
    require(l >= 0 && l < clusters, ErrorKind::invalid_argument,
            "label " + std::to_string(l) + " is outside [0, " + std::to_string(clusters) + ")");
    ++size[l];
  }
  std::vector<int> room(clusters, 0);  // rows a taking cluster may still accept
  std::vector<int> rem(clusters, 0);   // rows a shedding cluster offers
  for (int j = 0; j < clusters; ++j) {
    const int r = size[j] % align;
    if (r > take_above) room[j] = align - r;
    else rem[j] = r;
  }
  std::vector<char> taker(clusters, 0);
  for (int j = 0; j < clusters; ++j) taker[j] = room[j] > 0;
  // A candidate is usable when it names a taking cluster (the lists should hold nothing else).
  auto usable = [&](std::int64_t i, int k) {
    const std::int32_t c = candidates[i * e + k];
    return c >= 0 && c < clusters && taker[c] ? c : -1;
  };

  // Offers: each shedding cluster's rem rows whose first candidate costs least.
  std::vector<std::vector<std::int64_t>> members(clusters);
  for (std::int64_t i = 0; i < n; ++i)
    if (rem[labels[i]] > 0) members[labels[i]].push_back(i);
  std::vector<char> failed(clusters, 0);
  std::vector<std::vector<std::int64_t>> offered(clusters);
  for (int j = 0; j < clusters; ++j) {
    if (rem[j] == 0) continue;
    std::vector<std::pair<float, std::int64_t>> first;  // (cost of the first usable candidate, row)
    for (const std::int64_t i : members[j])
      for (int k = 0; k < e; ++k)
        if (usable(i, k) >= 0) {
          first.emplace_back(costs[i * e + k], i);
          break;
        }
    const bool nan = std::any_of(first.begin(), first.end(), [](const auto& f) { return f.first != f.first; });
    if (first.size() < static_cast<std::size_t>(rem[j]) || nan) {  // (NaN costs do not order: keep them)
      failed[j] = 1;
      continue;
    }
    std::partial_sort(first.begin(), first.begin() + rem[j], first.end());
    for (int t = 0; t < rem[j]; ++t) offered[j].push_back(first[t].second);
  }

  // Rounds: every unplaced offered row tries its next candidate with room; takers accept the
  // cheapest. A row is refused at most e times, so e + 2 rounds settle every row.
  std::vector<int> option(n, 0);
  std::vector<std::int32_t> target(n, -1);
  for (int round = 0; round < e + 2; ++round) {
    std::vector<std::tuple<std::int32_t, float, std::int64_t>> offers;  // (taker, cost, row)
    for (int j = 0; j < clusters; ++j) {
      if (failed[j]) continue;
      for (const std::int64_t i : offered[j]) {
        if (target[i] >= 0) continue;
        int k = option[i];
        while (k < e && !(usable(i, k) >= 0 && room[usable(i, k)] > 0)) ++k;
        option[i] = k;
        if (k == e) {
          failed[j] = 1;
          break;
        }
        offers.emplace_back(usable(i, k), costs[i * e + k], i);
      }
    }
    for (int j = 0; j < clusters; ++j) {  // a failed cluster's accepted rows free their room
      if (!failed[j]) continue;
      for (const std::int64_t i : offered[j])
        if (target[i] >= 0) ++room[target[i]], target[i] = -1;
    }
    std::erase_if(offers, [&](const auto& o) { return failed[labels[std::get<2>(o)]] != 0; });
    if (offers.empty()) break;
    std::sort(offers.begin(), offers.end());
    // Acceptance against the room at the round's start: a taker's room is counted down in order.
    for (const auto& [c, cost, i] : offers) {
      if (room[c] > 0) {
        --room[c];
        target[i] = c;
      } else {
        ++option[i];  // refused: its next candidate in the next round
      }
    }
  }
  std::int64_t moved = 0;
  for (int j = 0; j < clusters; ++j) {
    if (failed[j] || offered[j].empty()) continue;
    bool placed = true;
    for (const std::int64_t i : offered[j]) placed = placed && target[i] >= 0;
    if (!placed) continue;
    for (const std::int64_t i : offered[j]) labels[i] = target[i], ++moved;
  }
  return moved;
}

}  // namespace svoo
