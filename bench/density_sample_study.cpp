// CPU study (not a benchmark of this library's speed): could a GPU tau-density skip its full
// histogram pass by placing each row's crossing from a sample of the keys? For sampled query rows
// of a synthetic 720p layer whose heads span the reference profiles' densities (5e-4 to 0.2), it
// takes every 8th key, histograms their probabilities (1/8-octave bins relative to the sample's
// max), and places a window around the sample's crossing: the bins where the sample's mass
// crosses tau -+ d, d = 3 sqrt(tau (1 - tau)) sqrt(sum p^2) / sum p + 0.005 (the sample's
// statistical spread, capped at half the distance of tau to 0 or 1), one bin of margin each
// side. It reports, per head, how many rows' true crossing falls outside that window (each would
// need the exact search again) and the share of all keys inside it (what a refine pass would bin),
// next to the share of keys in the crossing's octave (what the exact two-pass search bins).
// With --errors it asks the same of wide windows instead: for samples of every 8th, 16th and 32nd
// key, how far (in octaves of p) the sample's crossing lies from the true one, per head: the rows
// off by more than 1, 1.5 and 2 octaves (a pass with thresholds that many octaves either side of
// the sample's crossing would have to search those rows again) and the extreme errors.
// Findings and what they decided: docs/cuda-backend.md ("The GPU tau-density").
//   svoo_density_sample_study [--tau T] [--frames F] [--rows R] [--errors]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "svoo/measures.hpp"
#include "svoo/synthetic.hpp"

int main(int argc, char** argv) {
  using namespace svoo;
  double tau = 0.95;
  int frames = 21, rows = 48;
  bool errors = false;
  CLI::App app{"CPU study: could a sample of the keys replace the histogram pass? (see the file's header)",
               "svoo_density_sample_study"};
  app.add_option("--tau", tau, "mass threshold")->check(CLI::Range(0.0, 1.0));
  app.add_option("--frames", frames, "latent frames")->check(CLI::Range(1, 1 << 20));
  app.add_option("--rows", rows, "rows checked a head")->check(CLI::Range(1, 1 << 20));
  app.add_flag("--errors", errors, "the sample's crossing error in octaves (samples of 1/8, 1/16, 1/32 of the keys)");
  CLI11_PARSE(app, argc, argv);
  if (!(tau > 0.0 && tau < 1.0)) {
    std::fprintf(stderr, "density_sample_study: --tau must lie strictly between 0 and 1 (got %g)\n", tau);
    return 2;
  }
  SyntheticConfig sc;
  sc.frames = frames, sc.height = 45, sc.width = 80, sc.calibration_rows = 48, sc.tau = tau;
  sc.target_density = {0.0005, 0.002, 0.01, 0.05, 0.2, 0.0005, 0.002, 0.01, 0.05, 0.2, 0.002, 0.02};
  sc.heads = static_cast<int>(sc.target_density.size());
  const SyntheticLayer layer = make_synthetic_layer(sc);
  const int H = sc.heads, D = 128;
  const std::int64_t N = layer.q.shape()[1];
  const double sl2 = 1.4426950408889634 / std::sqrt(static_cast<double>(D));
  constexpr int kPerOctave = 8, kBins = kPerOctave * 40;
  // Row qi's scores against every key of head h, in double precision.
  auto row_scores = [&](int h, std::int64_t qi) {
    std::vector<double> s(static_cast<std::size_t>(N));
    for (std::int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int d = 0; d < D; ++d)
        acc += static_cast<double>(layer.q.get((h * N + qi) * D + d)) * layer.k.get((h * N + j) * D + d);
      s[j] = acc;
    }
    return s;
  };
  if (errors) {
    // log2 of the crossing probability of keys off, off + stride, ... (p relative to the row max).
    auto crossing = [&](const std::vector<double>& s, double mx, int stride, int off) {
      std::vector<float> p;
      for (std::int64_t j = off; j < N; j += stride) p.push_back(static_cast<float>(std::exp2((s[j] - mx) * sl2)));
      const std::int64_t c = tau_count(p.data(), static_cast<std::int64_t>(p.size()), tau);
      std::nth_element(p.begin(), p.begin() + (c - 1), p.end(), std::greater<float>());
      return std::log2(static_cast<double>(p[c - 1]));
    };
    const int strides[3] = {8, 16, 32};
    std::printf("tau %.3f, %lld keys, %d query rows a head; error = true crossing - sample's, octaves of p\n", tau,
                (long long)N, rows);
    std::printf("%-15s %8s |", "head", "density");
    for (int st : strides) std::printf(" 1/%-2d rows off by >1 >1.5 >2   min, max error  |", st);
    std::printf("\n");
    for (int h = 0; h < H; ++h) {
      std::mt19937 rng(static_cast<unsigned>(h));
      int off1[3] = {}, off15[3] = {}, off2[3] = {};
      double lo[3] = {}, hi[3] = {};
      for (int r = 0; r < rows; ++r) {
        const std::int64_t qi = static_cast<std::int64_t>(rng() % static_cast<unsigned>(N));
        const std::vector<double> s = row_scores(h, qi);
        const double mx = *std::max_element(s.begin(), s.end());
        const double truth = crossing(s, mx, 1, 0);
        for (int k = 0; k < 3; ++k) {
          const double e = truth - crossing(s, mx, strides[k], strides[k] / 2);
          off1[k] += std::fabs(e) > 1, off15[k] += std::fabs(e) > 1.5, off2[k] += std::fabs(e) > 2;
          lo[k] = std::min(lo[k], e), hi[k] = std::max(hi[k], e);
        }
      }
      std::printf("%-15s %8.4f |", head_kind_name(layer.kinds[h]), layer.achieved_density[h]);
      for (int k = 0; k < 3; ++k)
        std::printf("      %3d %4d %3d   %+6.2f %+6.2f     |", off1[k], off15[k], off2[k], lo[k], hi[k]);
      std::printf("\n");
    }
    return 0;
  }
  std::printf("tau %.3f, %lld keys, %d query rows a head, sample = every 8th key\n", tau, (long long)N, rows);
  std::printf("%-15s %8s | %11s %13s %10s | %13s\n", "head", "density", "rows outside", "keys in window",
              "(per row)", "crossing octave");
  for (int h = 0; h < H; ++h) {
    int outside = 0;
    double window_share = 0, octave_share = 0;
    std::mt19937 rng(static_cast<unsigned>(h));
    for (int r = 0; r < rows; ++r) {
      const std::int64_t qi = static_cast<std::int64_t>(rng() % static_cast<unsigned>(N));
      const std::vector<double> s = row_scores(h, qi);
      const double mx = *std::max_element(s.begin(), s.end());
      std::vector<float> p(s.size());
      for (std::int64_t j = 0; j < N; ++j) p[j] = static_cast<float>(std::exp2((s[j] - mx) * sl2));
      const std::int64_t c = tau_count(p.data(), N, tau);
      std::vector<float> sorted(p);
      std::nth_element(sorted.begin(), sorted.begin() + (c - 1), sorted.end(), std::greater<float>());
      const double crossing = sorted[c - 1];
      // The sample's histogram, relative to its own max ms.
      double ms = -1e300;
      for (std::int64_t j = 0; j < N; j += 8) ms = std::max(ms, s[j]);
      std::vector<double> mass(kBins, 0.0);
      double total = 0, sq = 0;
      for (std::int64_t j = 0; j < N; j += 8) {
        const double x = std::exp2((s[j] - ms) * sl2);
        const int b = std::min(std::max(static_cast<int>(std::floor(-std::log2(x) * kPerOctave)), 0), kBins - 1);
        mass[b] += x, total += x, sq += x * x;
      }
      double d = 3 * std::sqrt(tau * (1 - tau)) * std::sqrt(sq) / total + 0.005;
      d = std::min(d, 0.5 * std::min(tau, 1 - tau));
      double cum = 0;
      int b_lo = -1, b_hi = kBins - 1;
      for (int b = 0; b < kBins; ++b) {
        cum += mass[b];
        if (b_lo < 0 && cum >= (tau - d) * total) b_lo = b;
        if (cum >= (tau + d) * total) {
          b_hi = b;
          break;
        }
      }
      b_lo = std::max(b_lo - 1, 0), b_hi = std::min(b_hi + 1, kBins - 1);
      const double to_sample = std::exp2((mx - ms) * sl2);  // p relative to mx -> relative to ms
      const double top = std::exp2(-static_cast<double>(b_lo) / kPerOctave);
      const double bottom = std::exp2(-static_cast<double>(b_hi + 1) / kPerOctave);
      const double x = crossing * to_sample;
      outside += !(x <= top && x > bottom);
      std::int64_t in = 0, same_octave = 0;
      for (std::int64_t j = 0; j < N; ++j) {
        const double y = p[j] * to_sample;
        in += y <= top && y > bottom;
        same_octave += std::floor(std::log2(p[j])) == std::floor(std::log2(crossing));
      }
      window_share += static_cast<double>(in) / N / rows;
      octave_share += static_cast<double>(same_octave) / N / rows;
    }
    std::printf("%-15s %8.4f | %5d of %3d %12.2f %% %10.0f | %12.2f %%\n", head_kind_name(layer.kinds[h]),
                layer.achieved_density[h], outside, rows, 100 * window_share, window_share * N, 100 * octave_share);
  }
  return 0;
}
