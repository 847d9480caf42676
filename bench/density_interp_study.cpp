// CPU study (not a benchmark of this library's speed): could the Hopper tau-density skip its middle
// pass by placing pass 3's window from pass 1's sums alone?
//
// Pass 1 knows, per row, the mass below thresholds `step` octaves apart and the total, so it knows
// the coarse window [lo, hi) of the crossing and the mass below both ends. Pass 2 (4 thresholds)
// narrows that to one octave for pass 3, whose per-warp queue then takes the window's scores. This
// study places a window of `width` octaves around an estimate of the crossing interpolated from
// pass 1's sums instead (log-linear between lo and hi, or a parabola in log mass through a third
// threshold), and counts per head:
//   - the rows whose crossing the window misses (they would need pass 2 and pass 3 again, on a
//     list of those rows only),
//   - the share of the scores inside the window (what pass 3's queue takes), against pass 2's
//     one-octave window of today.
// Every quantity is computed as the kernel classifies scores: s < theta(y), with theta and pvalue
// from density_search.hpp.
//   svoo_density_interp_study [--tau T] [--every E] [--data synthetic|normal] [--step S] [--count C]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cpu/gemm.hpp"
#include "cuda/density_search.hpp"
#include "density_study_layer.hpp"
#include "svoo/synthetic.hpp"

namespace {

namespace ds = svoo::cuda::detail::density::search;

// One row's scores sorted ascending with the prefix sums of p in that order: B(y), the mass below
// theta(y), and the count in [theta(a), theta(b)) by binary search.
struct SortedRow {
  std::vector<float> s;
  std::vector<double> below;  // below[i] = sum of p over s[0..i)
  float sl2 = 0.f;
  double mass_below(float y) const {
    const float t = ds::theta(y, sl2);
    return below[static_cast<std::size_t>(std::lower_bound(s.begin(), s.end(), t) - s.begin())];
  }
  double count_in(float a, float b) const {
    const auto lo = std::lower_bound(s.begin(), s.end(), ds::theta(a, sl2));
    const auto hi = std::lower_bound(s.begin(), s.end(), ds::theta(b, sl2));
    return static_cast<double>(hi - lo);
  }
};

float dyadic(float y) { return std::round(y * 16.f) / 16.f; }

// ln B at y, with B(y) floored at a tiny mass so that a window with nothing below stays finite.
double lnb(const SortedRow& r, float y, double total) { return std::log(std::max(r.mass_below(y), 1e-300 * total)); }

}  // namespace

int main(int argc, char** argv) {
  using namespace svoo;
  double tau = 0.9;
  int every = 64, step = ds::kCoarseStep, count = ds::kCoarse;
  std::string data = "synthetic";
  CLI::App app{"CPU study: a middle pass replaced by interpolation (see the file's header)", "svoo_density_interp_study"};
  app.add_option("--tau", tau, "mass threshold")->check(CLI::Range(0.0, 1.0));
  app.add_option("--every", every, "study every n-th item of 128 rows")->check(CLI::Range(1, 1 << 20));
  app.add_option("--data", data, "synthetic or normal")->check(CLI::IsMember({"synthetic", "normal"}));
  app.add_option("--step", step, "pass 1's octaves between thresholds")->check(CLI::Range(1, 8));
  app.add_option("--count", count, "pass 1's thresholds")->check(CLI::Range(1, 16));
  CLI11_PARSE(app, argc, argv);
  if (!bench::study_tau_ok("density_interp_study", tau)) return 2;
  // The layer of svoo_cuda_density_bench (Wan2.1-1.3B 720p).
  const bench::DensityStudyLayer study = bench::density_study_layer(data, tau);
  const SyntheticLayer& layer = study.layer;
  const std::vector<float>&q = study.q, &k = study.k;
  const int H = study.heads, D = 128, R = 128;
  const std::int64_t N = study.tokens;
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(D)));
  const float span = static_cast<float>(std::log2(static_cast<double>(N) / (1.0 - tau)));
  const int items = static_cast<int>((N + R - 1) / R);
  // Estimators: 0 log-linear between lo and hi; 1 parabola through hi + step, hi, lo (log-linear
  // where hi is c); 2 a monotone cubic (Fritsch-Butland slopes) through every threshold's ln B.
  // (A parabola through hi, lo, lo - step missed 99 % of the rows on normal data, where little mass
  // lies a step below lo.)
  // 3-5 (sp1-sp3): the kernel's rule (density_search.hpp, interp_window), centred on estimator 1
  // and widened by 1, 2 or 3 times the distance between estimators 1 and 0, at most 2 octaves (the
  // "width" column is then the least width; sp1 is the kernel's). An earlier build's 3-5 took the
  // span of estimators 0-2 widened by 0.25-0.5 octave a side: worse on normal data.
  constexpr int kEst = 6;
  const char* est_name[kEst] = {"loglin", "par-up", "pchip", "sp1", "sp2", "sp3"};
  const float widths[] = {0.5f, 0.75f, 1.f, 1.5f};
  constexpr int kW = 4;
  std::printf("%s data, tau %.3f, %lld tokens, every %d-th item of %d; pass 1: %d thresholds %d octaves apart\n",
              data.c_str(), tau, (long long)N, every, items, count, step);
  std::printf("columns: rows missed / share of scores in the window (hit rows), per estimator and window width;\n"
              "'p2 1oct' = pass 2's one-octave window share today; 'deep' = rows with no coarse sums around the crossing\n");
  std::printf("%-4s %-15s %8s %6s", "head", "kind", "p2 1oct", "deep");
  for (int e = 0; e < kEst; ++e)
    for (int w = 0; w < kW; ++w) std::printf(" %8s/%-4.2g", est_name[e], widths[w]);
  std::printf("\n");
  std::vector<float> s(static_cast<std::size_t>(R) * N);
  double all_rows = 0, all_p2 = 0, all_deep = 0, all_miss[kEst][kW] = {}, all_share[kEst][kW] = {}, all_hits[kEst][kW] = {};
  SortedRow row;
  row.sl2 = sl2;
  std::vector<std::int64_t> order(static_cast<std::size_t>(N));
  for (int h = 0; h < H; ++h) {
    double rows = 0, p2 = 0, deep = 0, miss[kEst][kW] = {}, share[kEst][kW] = {}, hits[kEst][kW] = {};
    for (int it = 0; it < items; it += every) {
      const std::int64_t row0 = static_cast<std::int64_t>(it) * R;
      const int nr = static_cast<int>(std::min<std::int64_t>(R, N - row0));
      cpu::gemm_nt(nr, N, D, 1.f, q.data() + (h * N + row0) * D, D, k.data() + h * N * D, D, 0.f, s.data(), N);
      for (int r = 0; r < nr; ++r) {
        const float* sr = s.data() + static_cast<std::size_t>(r) * N;
        row.s.assign(sr, sr + N);
        std::sort(row.s.begin(), row.s.end());
        const float smax = row.s.back();
        const float c = ds::reference_above(smax, sl2);
        row.below.assign(static_cast<std::size_t>(N) + 1, 0.0);
        for (std::int64_t j = 0; j < N; ++j) row.below[j + 1] = row.below[j] + ds::pvalue(row.s[j], sl2, c);
        const double total = row.below[N], rest = (1.0 - tau) * total;
        // Pass 1's coarse window (ds::coarse_window with this study's step and count).
        float lo = 0.f, hi = 0.f;
        bool found = false;
        for (int kk = 1; kk <= count && !found; ++kk)
          if (row.mass_below(c - static_cast<float>(kk * step)) <= rest)
            lo = c - static_cast<float>(kk * step), hi = c - static_cast<float>((kk - 1) * step), found = true;
        ++rows;
        if (!found) {  // below the thresholds: pass 2 as today for such rows
          ++deep;
          for (int e = 0; e < kEst; ++e)
            for (int w = 0; w < kW; ++w) ++miss[e][w];
          (void)span;
          continue;
        }
        // Pass 2's window today: kMid thresholds splitting [lo, hi) evenly.
        {
          float flo = lo, fhi = hi;
          for (int kk = 0; kk < ds::kMid; ++kk) {
            const float y = hi - static_cast<float>(kk) * (hi - lo) / ds::kMid;
            if (row.mass_below(y) <= rest) {
              flo = y;
              fhi = kk == 0 ? c : hi - static_cast<float>(kk - 1) * (hi - lo) / ds::kMid;
              break;
            }
            fhi = y, flo = lo;
          }
          p2 += row.count_in(flo, fhi) / static_cast<double>(N);
        }
        // The estimates, in octaves.
        const double lr = std::log(rest), l_lo = lnb(row, lo, total), l_hi = lnb(row, hi, total);
        auto loglin = [&] { return lo + (hi - lo) * static_cast<float>((lr - l_lo) / (l_hi - l_lo)); };
        // A parabola through (x_i, ln B(x_i)): solve ln B(y) = ln rest for y in [lo, hi] by bisection.
        auto parabola = [&](float x0, float x1, float x2) {
          const double y0 = lnb(row, x0, total), y1 = lnb(row, x1, total), y2 = lnb(row, x2, total);
          auto f = [&](double x) {
            return y0 * (x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2)) + y1 * (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2)) +
                   y2 * (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1));
          };
          double a = lo, b = hi;
          if (!((f(a) - lr) <= 0 && (f(b) - lr) > 0)) return loglin();
          for (int i = 0; i < 40; ++i) {
            const double m = 0.5 * (a + b);
            (f(m) - lr <= 0 ? a : b) = m;
          }
          return static_cast<float>(0.5 * (a + b));
        };
        const bool has_up = hi + static_cast<float>(step) <= c, has_down = lo - static_cast<float>(step) >= c - static_cast<float>(count * step);
        // Hermite cubic on [lo, hi] in (y, ln B) with Fritsch-Butland slopes from the neighbouring
        // secants (0 where they change sign; the secant itself at an end).
        auto pchip = [&] {
          const double fs = step, d = (l_hi - l_lo) / fs;
          auto slope = [&](bool has, double other) {
            if (!has) return d;
            const double e = other;
            return d * e > 0 ? 2.0 * d * e / (d + e) : 0.0;
          };
          const double m_hi = slope(has_up, has_up ? (lnb(row, hi + static_cast<float>(step), total) - l_hi) / fs : 0.0);
          const double m_lo = slope(has_down, has_down ? (l_lo - lnb(row, lo - static_cast<float>(step), total)) / fs : 0.0);
          auto f = [&](double y) {
            const double t = (y - lo) / fs, t2 = t * t, t3 = t2 * t;
            return (2 * t3 - 3 * t2 + 1) * l_lo + (t3 - 2 * t2 + t) * fs * m_lo + (-2 * t3 + 3 * t2) * l_hi +
                   (t3 - t2) * fs * m_hi;
          };
          double a = lo, b = hi;
          for (int i = 0; i < 40; ++i) {
            const double m = 0.5 * (a + b);
            (f(m) - lr <= 0 ? a : b) = m;
          }
          return static_cast<float>(0.5 * (a + b));
        };
        float est[kEst];
        est[0] = loglin();
        est[1] = has_up ? parabola(hi + static_cast<float>(step), hi, lo) : est[0];
        est[2] = pchip();
        for (int e = 0; e < kEst; ++e)
          for (int w = 0; w < kW; ++w) {
            float width = widths[w], centre = e < 3 ? est[e] : est[1];
            if (e >= 3) width = std::min(2.f, std::max(width, dyadic(width + static_cast<float>(e - 2) * std::fabs(est[1] - est[0]))));
            float wlo, whi;
            if (width >= hi - lo) {
              wlo = lo, whi = hi;
            } else {
              wlo = dyadic(std::clamp(centre - 0.5f * width, lo, hi - width));
              whi = wlo + width;
            }
            const bool in = row.mass_below(wlo) <= rest && row.mass_below(whi) > rest;
            if (!in) {
              ++miss[e][w];
            } else {
              ++hits[e][w];
              share[e][w] += row.count_in(wlo, whi) / static_cast<double>(N);
            }
          }
      }
    }
    std::printf("%-4d %-15s %8.4f %6.3f", h, head_kind_name(layer.kinds[h]), p2 / rows, deep / rows);
    for (int e = 0; e < kEst; ++e)
      for (int w = 0; w < kW; ++w)
        std::printf(" %6.3f/%-6.4f", miss[e][w] / rows, hits[e][w] > 0 ? share[e][w] / hits[e][w] : 0.0);
    std::printf("\n");
    std::fflush(stdout);
    all_rows += rows, all_p2 += p2, all_deep += deep;
    for (int e = 0; e < kEst; ++e)
      for (int w = 0; w < kW; ++w) all_miss[e][w] += miss[e][w], all_share[e][w] += share[e][w], all_hits[e][w] += hits[e][w];
  }
  std::printf("%-4s %-15s %8.4f %6.3f", "all", "", all_p2 / all_rows, all_deep / all_rows);
  for (int e = 0; e < kEst; ++e)
    for (int w = 0; w < kW; ++w)
      std::printf(" %6.3f/%-6.4f", all_miss[e][w] / all_rows, all_hits[e][w] > 0 ? all_share[e][w] / all_hits[e][w] : 0.0);
  std::printf("\n");
  return 0;
}
