// CPU study (not a benchmark of this library's speed): how many (item, key tile) products could
// the Hopper tau-density's passes 2 and 3 skip? An item is 128 query rows, a key tile 128 keys (the
// kernel's). A tile can be skipped by a pass when none of its scores reaches any of the item's
// rows' windows: such scores add only to the mass below the window, which the pass before knows.
//   - pass 3 from flags written by pass 2, which knows each row's coarse window [lo, hi): a tile
//     is needed iff some row has a score >= theta(lo) in it (exact, row by row);
//   - pass 2 from flags written by pass 1, which knows only a running reference c_run (the
//     windows are chosen at the pass's end): per tile U = max over rows of (tile max in octaves -
//     c_run), and a tile is skippable iff U < -(the deepest window of the item below its final
//     c); rows whose window lies below pass 1's thresholds make every tile needed. Measured for
//     the key tiles in order, and in an order that starts at the item's own tile (where a local
//     head's row maxima are, so c_run is final from the first tile on).
// Per head: the share of (item, tile) pairs each pass could skip, for every `--every`-th item.
//   svoo_density_skip_study [--tau T] [--every E] [--data synthetic|normal]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cpu/gemm.hpp"
#include "cuda/density_search.hpp"
#include "density_study_layer.hpp"
#include "svoo/synthetic.hpp"

int main(int argc, char** argv) {
  using namespace svoo;
  namespace ds = cuda::detail::density::search;
  double tau = 0.9;
  int every = 16;
  std::string data = "synthetic";
  CLI::App app{"CPU study: which key tiles could the GPU tau-density's passes 2 and 3 skip? (see the file's header)",
               "svoo_density_skip_study"};
  app.add_option("--tau", tau, "mass threshold")->check(CLI::Range(0.0, 1.0));
  app.add_option("--every", every, "study every n-th row")->check(CLI::Range(1, 1 << 20));
  app.add_option("--data", data, "synthetic or normal")->check(CLI::IsMember({"synthetic", "normal"}));
  CLI11_PARSE(app, argc, argv);
  if (!bench::study_tau_ok("density_skip_study", tau)) return 2;
  const bench::DensityStudyLayer study = bench::density_study_layer(data, tau);
  const SyntheticLayer& layer = study.layer;
  const std::vector<float>&q = study.q, &k = study.k;
  const int H = study.heads, D = 128, R = 128, T = 128;
  const std::int64_t N = study.tokens;
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(D)));
  const float span = static_cast<float>(std::log2(static_cast<double>(N) / (1.0 - tau)));
  const int tiles = static_cast<int>((N + T - 1) / T), items = static_cast<int>((N + R - 1) / R);
  std::printf("%s data, tau %.3f, %lld tokens, every %d-th item of %d, %d key tiles an item\n", data.c_str(), tau,
              (long long)N, every, items, tiles);
  std::printf("%-4s %-15s %9s %11s | %9s %9s | %9s %9s | %9s %9s\n", "head", "kind", "depth", "deep rows", "p2 order",
              "p2 own 1st", "p3 coarse", "p3 fine", "p3 window", "no lane");
  std::vector<float> s(static_cast<std::size_t>(R) * N);
  double all2 = 0, all2r = 0, all3 = 0, all3f = 0, pairs_all = 0, all_in = 0, all_scores = 0, all_ballots = 0, all_empty = 0;
  for (int h = 0; h < H; ++h) {
    double skip2 = 0, skip2r = 0, skip3 = 0, skip3f = 0, pairs = 0, depth_sum = 0, deep = 0, rows_seen = 0;
    double in_window = 0, scores = 0, ballots = 0, empty_ballots = 0;
    for (int it = 0; it < items; it += every) {
      const std::int64_t row0 = static_cast<std::int64_t>(it) * R;
      const int nr = static_cast<int>(std::min<std::int64_t>(R, N - row0));
      cpu::gemm_nt(nr, N, D, 1.f, q.data() + (h * N + row0) * D, D, k.data() + h * N * D, D, 0.f, s.data(), N);
      std::vector<float> tmax(static_cast<std::size_t>(nr) * tiles, -INFINITY);
      std::vector<float> c(nr), lo(nr), flo(nr), fhi(nr);
      std::vector<char> deep_row(nr, 0);
      float max_depth = 0;
      for (int r = 0; r < nr; ++r) {
        const float* sr = s.data() + static_cast<std::size_t>(r) * N;
        float smax = -INFINITY;
        for (std::int64_t j = 0; j < N; ++j) {
          float& m = tmax[static_cast<std::size_t>(r) * tiles + j / T];
          m = std::max(m, sr[j]);
          smax = std::max(smax, sr[j]);
        }
        c[r] = ds::reference_above(smax, sl2);
        double b[ds::kCoarse], total = 0;
        float th[ds::kCoarse];
        for (int kk = 0; kk < ds::kCoarse; ++kk) b[kk] = 0, th[kk] = ds::theta(c[r] - static_cast<float>((kk + 1) * ds::kCoarseStep), sl2);
        for (std::int64_t j = 0; j < N; ++j) {
          const double p = ds::pvalue(sr[j], sl2, c[r]);
          total += p;
          for (int kk = 0; kk < ds::kCoarse; ++kk)
            if (sr[j] < th[kk]) b[kk] += p;
        }
        const ds::Window w = ds::coarse_window(b, total, tau, c[r], smax, sl2, span);
        lo[r] = w.lo;
        deep_row[r] = w.lo < c[r] - static_cast<float>(ds::kCoarse * ds::kCoarseStep);
        deep += deep_row[r];
        depth_sum += c[r] - w.lo;
        max_depth = std::max(max_depth, c[r] - w.lo);
        double bm[ds::kMid];
        float mth[ds::kMid];
        for (int kk = 0; kk < ds::kMid; ++kk) bm[kk] = 0, mth[kk] = ds::theta(ds::mid_threshold(w, kk), sl2);
        for (std::int64_t j = 0; j < N; ++j) {
          const double p = ds::pvalue(sr[j], sl2, c[r]);
          for (int kk = 0; kk < ds::kMid; ++kk)
            if (sr[j] < mth[kk]) bm[kk] += p;
        }
        const ds::Window fw = ds::fine_window(bm, total, tau, w, c[r]).w;
        flo[r] = fw.lo, fhi[r] = fw.hi;
        ++rows_seen;
      }
      // Pass 3's queue: the share of scores in the fine window, and of the warp's ballots (one a
      // score index: 16 rows of a warp, 8 a half, lanes l / 4, columns 8 (i / 4) + 2 (l % 4) + i % 2)
      // that find no lane in the window (the ballot and its stores could then be skipped).
      for (int r = 0; r < nr; ++r) {
        const float* sr = s.data() + static_cast<std::size_t>(r) * N;
        const float tlo = ds::theta(flo[r], sl2), thi = ds::theta(fhi[r], sl2);
        for (std::int64_t j = 0; j < N; ++j) in_window += sr[j] >= tlo && sr[j] < thi;
        scores += static_cast<double>(N);
      }
      for (int w0 = 0; w0 + 16 <= nr; w0 += 16)
        for (int t = 0; t < tiles; ++t)
          for (int i = 0; i < 64; ++i) {
            const int hh = (i / 2) % 2;
            bool any = false;
            for (int l = 0; l < 32 && !any; ++l) {
              const int r = w0 + hh * 8 + l / 4;
              const std::int64_t j = static_cast<std::int64_t>(t) * T + 8 * (i / 4) + 2 * (l % 4) + i % 2;
              if (j >= N) continue;
              const float v = s[static_cast<std::size_t>(r) * N + j];
              any = v >= ds::theta(flo[r], sl2) && v < ds::theta(fhi[r], sl2);
            }
            ballots += 1, empty_ballots += !any;
          }
      const bool any_deep = std::any_of(deep_row.begin(), deep_row.end(), [](char d) { return d != 0; });
      // Pass 3: exact per row.
      for (int t = 0; t < tiles; ++t) {
        bool need = false, need_f = false;
        for (int r = 0; r < nr; ++r) {
          need |= tmax[static_cast<std::size_t>(r) * tiles + t] >= ds::theta(lo[r], sl2);
          need_f |= tmax[static_cast<std::size_t>(r) * tiles + t] >= ds::theta(flo[r], sl2);
        }
        skip3 += !need, skip3f += !need_f;
      }
      // Pass 2 from pass 1's running references, in two tile orders.
      for (int rotated = 0; rotated < 2; ++rotated) {
        std::vector<float> run_max(nr, -INFINITY);
        for (int i = 0; i < tiles; ++i) {
          const int t = rotated ? (i + std::min(it, tiles - 1)) % tiles : i;
          float u = -INFINITY;
          for (int r = 0; r < nr; ++r) {
            const float m = tmax[static_cast<std::size_t>(r) * tiles + t];
            run_max[r] = std::max(run_max[r], m);
            u = std::max(u, m * sl2 - ds::reference_above(run_max[r], sl2));
          }
          const bool skip = !any_deep && u < -max_depth;
          (rotated ? skip2r : skip2) += skip;
        }
      }
      pairs += tiles;
    }
    std::printf("%-4d %-15s %9.2f %11.4f | %9.3f %9.3f | %9.3f %9.3f | %9.4f %9.3f\n", h, head_kind_name(layer.kinds[h]),
                depth_sum / rows_seen, deep / rows_seen, skip2 / pairs, skip2r / pairs, skip3 / pairs, skip3f / pairs,
                in_window / scores, empty_ballots / ballots);
    all_in += in_window, all_scores += scores, all_ballots += ballots, all_empty += empty_ballots;
    std::fflush(stdout);
    all2 += skip2, all2r += skip2r, all3 += skip3, all3f += skip3f, pairs_all += pairs;
  }
  std::printf("all  %-15s %9s %11s | %9.3f %9.3f | %9.3f %9.3f | %9.4f %9.3f\n", "", "", "", all2 / pairs_all,
              all2r / pairs_all, all3 / pairs_all, all3f / pairs_all, all_in / all_scores, all_empty / all_ballots);
  return 0;
}
