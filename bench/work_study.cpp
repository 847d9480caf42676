// CPU study (not a benchmark of this library's speed): how much of the Hopper attention kernel's
// time goes to ragged work, and would pairing the short remainders of two query clusters into one
// work item pay? It co-clusters a synthetic 720p layer on the CPU (Kq/Kk 256/1024 or --kq/--kk, T = 2, the
// kernel benchmark's workload and selection: every row keeps the same share of its top key
// clusters, bisected to a block density), then prices the kernel's work list with a cost model in
// key-tile times (one tile: 128 keys x a 128-row item on both consumers):
//   - an item of 65-128 rows: overhead + tiles(L), L = the cluster's kept keys, tiles = ceil(L / 128);
//   - an item of at most 64 rows runs on one consumer: overhead + solo * tiles(L);
//   - a pair of such items from two clusters of one head, run as one item over the union of
//     their key lists (each consumer masking the keys its cluster does not keep):
//     overhead + (1 + mask) * tiles(|union|).
// Defaults from the H100 measurements (docs/cuda-backend.md): overhead 3.1 tile times a item (the
// fit of run40's rates at 10 % and 30 %), solo 0.65, mask 0.05 (a guess: one select a score).
// "useful" is the work at full occupancy, rows x L / 128^2 summed over clusters; the efficiency
// useful / cost is then comparable with the measured sparse / dense rate ratio. The time lost is
// split by cause: rows an item leaves empty (or a solo item's idle consumer), the padding of the
// last key tile, and the per-item overhead. It also deals the work list (the heads studied repeated
// --copies times, standing for a layer's heads) to --sms SMs in list order, each block to the first
// SM that is free, to price the tail of the grid ("tail": the makespan over the ideal spread), and
// prices splitting every item of more than --chunk key tiles into pieces whose partial outputs a
// log-sum-exp merge combines (--merge tile times a piece; "split: time": the makespan over the
// unsplit one's).
// "shared": the share of the key-tile loads that two SMs would share if each query cluster's items
// ran in pairs, both streaming the cluster's one key list (floor(items / 2) pairs a cluster; each
// gathered tile then serves two items), an upper bound for a cluster-pair producer. "lockstep":
// what running that way costs in time before any gain from the shared loads: the items as entries
// of a two-SM cluster (a query cluster's items two by two, each head's lone items paired in cost
// order; an entry takes the longer of its two) on --sms / 2 clusters, largest first within each
// head, over the makespan of the items one SM each in the same order.
// With --nside X it also prices each cluster's last, partly filled item with its queries on the
// products' N side, at X more than the ideal rate of its rows rounded up to 16 ("N-side"); with
// --nside-costs a,b,c,d, each remainder of at most 64 rows at the given cost a key tile instead
// (by its rows rounded up to 16; e.g. svoo_nside_floor_bench's measured products).
//   svoo_work_study [--heads H] [--frames F] [--height Y] [--width X] [--kq Q] [--kk K] [--solo S] [--overhead O] [--mask M]
//                   [--sms N] [--copies C] [--chunk T] [--merge M] [--nside X | --nside-costs a,b,c,d]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <queue>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "svoo/cpu.hpp"
#include "svoo/measures.hpp"
#include "svoo/selection.hpp"
#include "svoo/synthetic.hpp"

namespace {

struct Model {
  double overhead = 3.1, solo = 0.65, mask = 0.05;
  // A cluster's last, partly filled item with its queries on the products' N side (S^T = K Q^T,
  // whose N goes down to 8 or 16): ceil(rows / 16) x 16 / 128 of a full item's tile time, times
  // (1 + nside) for what that layout costs more (a column softmax across the warpgroup's warps,
  // P^T through shared memory); taken where cheaper than the row-side item. Negative: not modelled.
  double nside = -1;
  // Or measured: the cost per key tile of a remainder of at most 64 rows on the N side, by its rows
  // rounded up to 16, 32, 48 and 64 (in full items' tile times; empty: use nside).
  std::vector<double> nside_costs;
};

double tiles(std::int64_t keys) { return static_cast<double>((keys + 127) / 128); }

struct Priced {
  double useful = 0, cost = 0, cost_paired = 0, cost_nside = 0;
  double waste_rows = 0, waste_keys = 0, waste_overhead = 0;  // cost - useful, by cause
  std::int64_t items = 0, solo_items = 0, pairs = 0;
  double loads = 0, shared_loads = 0;  // key-tile loads of the list; those a cluster pair shares
  double union_over_max = 0;  // summed over pairs
  std::vector<double> list;   // each item's cost, in the kernel's work-list order (head, cluster, tile)
  std::vector<double> list_tiles;  // each item's key tiles (for splitting)
  // Largest first within each head (the kernel's order at 720p): the items one SM each, and the
  // same items as lockstep entries of a two-SM cluster pair (a query cluster's items two by two,
  // the lone ones of a head paired in cost order; an entry costs the longer of its two).
  std::vector<double> ordered, pair_entries;
};

// Prices the work list of one head's query clusters.
void price_head(const svoo::BlockLayout& layout, const svoo::Selection& sel, const svoo::Clustering& c,
                std::int64_t h, const Model& m, Priced& out) {
  const int kq = layout.kq, kk = layout.kk;
  struct Solo {
    int cluster;
    std::int64_t keys;
    double cost;
  };
  std::vector<Solo> solos;
  std::vector<double> head_items, head_entries, lone;
  for (int i = 0; i < kq; ++i) {
    const std::int64_t rows = layout.q_offsets[h * (kq + 1) + i + 1] - layout.q_offsets[h * (kq + 1) + i];
    if (rows == 0) continue;
    std::int64_t keys = 0;
    const std::int64_t w = h * kq + i;
    for (std::int64_t r = layout.range_ptr[w]; r < layout.range_ptr[w + 1]; ++r)
      keys += layout.range_end[r] - layout.range_begin[r];
    out.useful += static_cast<double>(rows) * keys / (128.0 * 128.0);
    const std::int64_t full = rows / 128, rest = rows % 128;
    const double item = m.overhead + tiles(keys);
    // An item of r rows at factor f (1, or solo) wastes f (tiles - L/128) on its last key tile
    // and (f - r/128) L/128 on rows it does not fill.
    auto waste = [&](std::int64_t r, double f, std::int64_t count) {
      out.waste_overhead += count * m.overhead;
      out.waste_keys += count * f * (tiles(keys) - keys / 128.0);
      out.waste_rows += count * (f - r / 128.0) * keys / 128.0;
    };
    waste(128, 1.0, full);
    if (rest > 64) waste(rest, 1.0, 1);
    else if (rest > 0) waste(rest, m.solo, 1);
    std::vector<double> item_costs;  // this cluster's items
    for (std::int64_t k = 0; k < full + (rest > 0 ? 1 : 0); ++k) {
      const double f = k < full || rest > 64 ? 1.0 : m.solo;
      out.list.push_back(m.overhead + f * tiles(keys));
      out.list_tiles.push_back(f * tiles(keys));
      item_costs.push_back(m.overhead + f * tiles(keys));
    }
    head_items.insert(head_items.end(), item_costs.begin(), item_costs.end());
    for (std::size_t k = 0; k + 1 < item_costs.size(); k += 2)
      head_entries.push_back(std::max(item_costs[k], item_costs[k + 1]));
    if (item_costs.size() % 2 == 1) lone.push_back(item_costs.back());
    out.cost += full * item;
    out.cost_paired += full * item;
    out.cost_nside += full * item;
    if (rest > 0) {
      const double row_side = rest > 64 ? 1.0 : m.solo;
      double n_side = m.nside < 0 ? row_side : static_cast<double>((rest + 15) / 16 * 16) / 128.0 * (1.0 + m.nside);
      if (!m.nside_costs.empty()) n_side = rest <= 64 ? m.nside_costs[(rest - 1) / 16] : row_side;
      out.cost_nside += m.overhead + std::min(row_side, n_side) * tiles(keys);
    }
    const std::int64_t cluster_items = full + (rest > 0 ? 1 : 0);
    out.loads += cluster_items * tiles(keys);
    out.shared_loads += (cluster_items / 2) * tiles(keys);
    out.items += full;
    if (rest > 64) {
      out.cost += item, out.cost_paired += item, ++out.items;
    } else if (rest > 0) {
      const double cost = m.overhead + m.solo * tiles(keys);
      out.cost += cost, ++out.items, ++out.solo_items;
      solos.push_back({i, keys, cost});
    }
  }
  // Greedy pairing, largest key lists first: each solo takes the partner that saves the most.
  std::sort(solos.begin(), solos.end(), [](const Solo& a, const Solo& b) { return a.keys > b.keys; });
  std::vector<char> used(solos.size(), 0);
  const std::uint8_t* keep = sel.keep.data() + h * kq * kk;
  const std::int32_t* ksize = c.k_sizes.data() + h * kk;
  for (std::size_t a = 0; a < solos.size(); ++a) {
    if (used[a]) continue;
    used[a] = 1;
    double best_gain = 0;
    std::size_t best = a;
    std::int64_t best_union = 0;
    const std::uint8_t* ka = keep + static_cast<std::int64_t>(solos[a].cluster) * kk;
    for (std::size_t b = a + 1; b < solos.size(); ++b) {
      if (used[b]) continue;
      const std::uint8_t* kb = keep + static_cast<std::int64_t>(solos[b].cluster) * kk;
      std::int64_t uni = 0;
      for (int j = 0; j < kk; ++j) uni += (ka[j] | kb[j]) ? ksize[j] : 0;
      const double gain = solos[a].cost + solos[b].cost - (m.overhead + (1.0 + m.mask) * tiles(uni));
      if (gain > best_gain) best_gain = gain, best = b, best_union = uni;
    }
    if (best != a) {
      used[best] = 1;
      out.cost_paired += m.overhead + (1.0 + m.mask) * tiles(best_union);
      ++out.pairs;
      out.union_over_max += static_cast<double>(best_union) / std::max(solos[a].keys, solos[best].keys);
    } else {
      out.cost_paired += solos[a].cost;
    }
  }
  std::sort(lone.begin(), lone.end(), std::greater<>());
  for (std::size_t k = 0; k < lone.size(); k += 2) head_entries.push_back(lone[k]);  // the longer of the two (sorted)
  std::sort(head_items.begin(), head_items.end(), std::greater<>());
  std::sort(head_entries.begin(), head_entries.end(), std::greater<>());
  out.ordered.insert(out.ordered.end(), head_items.begin(), head_items.end());
  out.pair_entries.insert(out.pair_entries.end(), head_entries.begin(), head_entries.end());
}

// The makespan of a work list on `sms` SMs, one block an SM, blocks dealt in list order to the
// first SM that is free (what the hardware does with a grid larger than a wave). `copies` repeats
// the list (more heads of the same kind). Returns the makespan over the ideal (total / sms).
double schedule(const std::vector<double>& list, int copies, int sms) {
  std::priority_queue<double, std::vector<double>, std::greater<double>> free_at;
  for (int s = 0; s < sms; ++s) free_at.push(0.0);
  double total = 0, end = 0;
  for (int c = 0; c < copies; ++c)
    for (double cost : list) {
      const double start = free_at.top();
      free_at.pop();
      free_at.push(start + cost);
      end = std::max(end, start + cost);
      total += cost;
    }
  return end / (total / sms);
}

// The same list with every item longer than `chunk` key tiles split into pieces of at most `chunk`
// tiles, each a block of its own (overhead + its tiles) plus a merge of the pieces' partial outputs
// and log-sum-exps (`merge` tile times a piece of a split item). Returns the makespan in tile times.
double schedule_split(const Priced& p, const Model& m, double chunk, double merge, int copies, int sms) {
  std::vector<double> list;
  for (std::size_t i = 0; i < p.list.size(); ++i) {
    const double t = p.list_tiles[i];
    const int pieces = t > chunk ? static_cast<int>(std::ceil(t / chunk)) : 1;
    for (int k = 0; k < pieces; ++k) list.push_back(m.overhead + t / pieces + (pieces > 1 ? merge : 0.0));
  }
  double total = 0;
  for (double c : list) total += c;
  return schedule(list, copies, sms) * copies * total / sms;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace svoo;
  Model m;
  int sms = 132, copies = 10;         // H100 SXM; the 4 heads studied stand for 40 (Wan2.1-14B)
  double chunk = 64, merge = 1.0;     // splitting: key tiles a piece, merge cost a piece (tile times)
  SyntheticConfig sc;
  sc.heads = 4, sc.frames = 21, sc.height = 45, sc.width = 80, sc.calibration_rows = 128;
  CLI::App app{"CPU study of the attention kernel's work list (see the file's header)", "svoo_work_study"};
  app.add_option("--heads", sc.heads, "synthetic heads co-clustered")->check(CLI::Range(1, 1 << 20));
  app.add_option("--frames", sc.frames, "latent frames")->check(CLI::Range(1, 1 << 20));
  app.add_option("--height", sc.height, "latent height")->check(CLI::Range(1, 1 << 20));
  app.add_option("--width", sc.width, "latent width")->check(CLI::Range(1, 1 << 20));
  app.add_option("--solo", m.solo, "cost of an item of <= 64 rows, in full items")
      ->check(CLI::Range(1e-3, 1e3));
  app.add_option("--overhead", m.overhead, "an item's start and finish, tile times")->check(CLI::Range(0.0, 1e9));
  app.add_option("--mask", m.mask, "masking cost of a paired item, per tile")->check(CLI::Range(0.0, 1e9));
  app.add_option("--sms", sms, "SMs the work list is dealt to")->check(CLI::Range(1, 1 << 20));
  app.add_option("--copies", copies, "times the heads studied repeat in the list")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--chunk", chunk, "split: key tiles a piece at most")->check(CLI::Range(1.0, 1e9));
  app.add_option("--merge", merge, "split: merge cost a piece, tile times")->check(CLI::Range(0.0, 1e9));
  app.add_option("--nside", m.nside, "N-side remainders: their cost over the ideal rate of their rows (-1: off)")
      ->check(CLI::Range(-1.0, 1e3));
  app.add_option("--nside-costs", m.nside_costs,
                 "N-side remainders of <= 16, 32, 48, 64 rows: their cost a key tile, in full items' tile times")
      ->expected(4)
      ->delimiter(',')
      ->check(CLI::Range(1e-3, 1e3));
  ClusterConfig cfg;  // Kq/Kk 256/1024 (the released defaults, stated at 720p) unless given
  app.add_option("--kq", cfg.kq, "query clusters per head")->check(CLI::Range(1, 1 << 20));
  app.add_option("--kk", cfg.kk, "key clusters per head")->check(CLI::Range(1, 1 << 20));
  app.add_option("--align", cfg.query_align, "query-cluster alignment (0: off, the spec's clustering)")
      ->check(CLI::Range(0, 256));
  app.add_option("--candidates", cfg.align_candidates, "alignment: taking clusters a moved row may try")
      ->check(CLI::Range(1, 64));
  app.add_option("--align-passes", cfg.align_passes, "alignment: passes (ClusterConfig::align_passes)")
      ->check(CLI::Range(1, kMaxAlignPasses));
  std::int64_t recall_rows = 0;
  app.add_option("--recall-rows", recall_rows, "also the attention recall on this many sampled rows a head (0: not)")
      ->check(CLI::Range(0, 1 << 30));
  CLI11_PARSE(app, argc, argv);
  const SyntheticLayer layer = make_synthetic_layer(sc);
  const std::int64_t H = sc.heads, N = layer.q.shape()[1];
  if (cfg.kq > N || cfg.kk > N) {  // clusters would be mostly empty: a study of nothing
    std::fprintf(stderr, "svoo_work_study: --kq %d / --kk %d exceed the layer's %lld tokens\n", cfg.kq, cfg.kk, (long long)N);
    return 2;
  }
  const Clustering c = cpu::cluster(layer.q.view(), layer.k.view(), cfg);
  const std::vector<float> scores = cpu::block_scores(c);
  {
    ClusterConfig plain = cfg;
    plain.query_align = 0;
    const Clustering c0 = cfg.query_align > 1 ? cpu::cluster(layer.q.view(), layer.k.view(), plain) : c;
    std::int64_t moved = 0;
    for (std::size_t i = 0; i < c.q_labels.size(); ++i) moved += c.q_labels[i] != c0.q_labels[i];
    std::printf("query alignment %d (%d candidates, %d passes): %.2f %% of the rows in another cluster than without; empty rows "
                "of 64-row chunks %.2f %% -> %.2f %%, of 128-row items %.2f %% -> %.2f %%\n",
                cfg.query_align, cfg.align_candidates, cfg.align_passes, 100.0 * moved / c.q_labels.size(),
                100.0 * empty_chunk_rows(c0.q_sizes, 64) / c.q_labels.size(),
                100.0 * empty_chunk_rows(c.q_sizes, 64) / c.q_labels.size(),
                100.0 * empty_chunk_rows(c0.q_sizes, 128) / c.q_labels.size(),
                100.0 * empty_chunk_rows(c.q_sizes, 128) / c.q_labels.size());
  }
  std::printf("%lld heads x %lld tokens, Kq/Kk %d/%d, T = 2; model: overhead %.2f tile times an item, solo %.2f, "
              "mask %.2f\n",
              (long long)H, (long long)N, cfg.kq, cfg.kk, m.overhead, m.solo, m.mask);
  std::printf("schedule: the list repeated %d times on %d SMs in list order; split: pieces of <= %.0f key tiles, "
              "merge %.2f tile times a piece\n",
              copies, sms, chunk, merge);
  std::printf("%8s %8s %7s %6s | %10s %10s | %26s | %6s %9s %10s | %9s %12s | %8s | %7s %8s\n", "target", "density",
              "items", "solo", "efficiency", "no ragged", "lost to: rows, keys, items", "pairs", "union/max", "paired",
              "tail", "split: time", "N-side", "shared", "lockstep");
  if (recall_rows > 0) std::printf("  (last column: mean attention recall on %lld sampled rows a head)\n", (long long)recall_rows);
  for (double d : {0.05, 0.10, 0.15, 0.20, 0.30}) {
    double lo = 0.0, hi = 1.0, density = 0;
    Selection sel;
    BlockLayout layout;
    for (int it = 0; it < 14; ++it) {
      const double f = 0.5 * (lo + hi);
      SelectionConfig s;
      s.top_p = 0.0, s.floor_lo = s.floor_hi = f;
      sel = select_blocks(scores, H, cfg.kq, cfg.kk, s, std::vector<double>(H, f));
      layout = build_layout(c, sel);
      density = static_cast<double>(layout.kept_pairs()) / (static_cast<double>(H) * N * N);
      (density < d ? lo : hi) = f;
    }
    Priced p;
    for (std::int64_t h = 0; h < H; ++h) price_head(layout, sel, c, h, m, p);
    // Without ragged work: every item full (128 rows, whole key tiles), the per-item overhead kept.
    const double no_ragged = p.useful / (p.useful + m.overhead * p.items);
    // tail: the makespan over the ideal spread of the same work; split: the split list's makespan
    // over the unsplit one's.
    const double tail = schedule(p.list, copies, sms);
    const double unsplit = tail * copies * p.cost / sms;
    const double split_makespan = schedule_split(p, m, chunk, merge, copies, sms);
    // lockstep: the pair entries on sms / 2 clusters against the items on sms SMs, both largest
    // first within each head; what running in pairs costs before any gain from sharing loads.
    auto makespan = [&](const std::vector<double>& list, int units) {
      const double total = std::accumulate(list.begin(), list.end(), 0.0);
      return schedule(list, copies, units) * copies * total / units;
    };
    const double lockstep = makespan(p.pair_entries, sms / 2) / makespan(p.ordered, sms);
    std::printf("%8.2f %8.4f %7lld %5.1f%% | %10.3f %10.3f | %8.3f %8.3f %8.3f | %6lld %9.2f %10.3f | %9.4f %12.4f | %8.3f | %6.1f%% %8.4f",
                d, density, (long long)p.items, 100.0 * p.solo_items / std::max<std::int64_t>(1, p.items),
                p.useful / p.cost, no_ragged, p.waste_rows / p.cost, p.waste_keys / p.cost, p.waste_overhead / p.cost,
                (long long)p.pairs, p.pairs ? p.union_over_max / p.pairs : 0.0, p.useful / p.cost_paired, tail,
                split_makespan / unsplit, p.useful / p.cost_nside, 100.0 * p.shared_loads / std::max(1.0, p.loads), lockstep);
    if (recall_rows > 0) {
      const std::vector<double> rec = attention_recall(layer.q.view(), layer.k.view(), c, sel, {recall_rows, 1});
      std::printf("  %7.4f", std::accumulate(rec.begin(), rec.end(), 0.0) / rec.size());
    }
    std::printf("\n");
  }
  return 0;
}
