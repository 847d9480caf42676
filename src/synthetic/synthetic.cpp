// Synthetic video-DiT-like attention inputs (see docs/synthetic-workload.md).
//
// How a layer is built:
// - Tokens sit on a (frames, height, width) grid in Wan2.1's flattening order (frame-major).
// - One scene is shared by every head: `objects` blobs (discs whose centres move smoothly along
//   sinusoidal paths) over a background; each token is labelled with the blob covering it (the
//   one whose centre is nearest relative to its radius) or with the background.
// - Per head, pre-RoPE vectors q = u + g * e[label] + noise_q and k = u + g * e[label] + noise_k:
//   u is a "positional" direction shared by all tokens, whose energy per complex pair (amplitude
//   a_p, random phase) is chosen by the head kind. After RoPE, <u_rot(i), u_rot(j)> =
//   sum_p a_p^2 cos((pos_i - pos_j) * f_p): a kernel of the relative position on each axis that
//   peaks at distance 0 and decays, which is how RoPE produces locality in real models.
//   e[label] is a per-head object embedding confined to low-frequency pairs (rotation below half a
//   radian across the whole grid), so it survives RoPE almost unchanged: same-object tokens
//   attract wherever they are. Noise is i.i.d. Gaussian per dimension (its deviation per axis is
//   part of the kind). V = an embedding of the token's label + noise, so outputs carry content.
// - Kinds (params_of): spatial_local puts u on the height and width pairs (weak temporal part);
//   temporal_local puts strong u on the temporal pairs plus a stronger height/width part (same
//   (h, w) wins, then nearby frames); semantic has a large object embedding and a faint
//   positional part; near_global has weak structure everywhere.
// - RoPE exactly like Wan2.1: head dim D = 2c; pairs (x[2i], x[2i+1]) are complex numbers; the
//   first c - 2*(c/3) pairs are temporal, the next c/3 height, the last c/3 width; on an axis with
//   d_axis dims pair i has frequency theta^(-2i/d_axis), theta = 10000, angle = position * freq.
// - Calibration: a per-head temperature beta multiplies q. The head's tau-density on the sampled
//   rows is evaluated from fp32 logits (of the stored, rounded k) computed once, since beta only
//   rescales them; log(beta) is found by a search in log space on log(density): secant steps
//   until the target is bracketed, then false position kept inside the middle 80% of the bracket
//   (so it shrinks like bisection when interpolation stalls), until the density is within 0.5% of
//   the target. q is then scaled and rounded to the requested dtype, and achieved_density is
//   measured on the stored tensors with the same rows, so it includes the rounding. Tolerance:
//   within 2% relative of the target (tested); about 0.5% is typical (default config: <= 0.5%).
// - Limits of what is reachable: density cannot exceed about tau (a uniform row needs
//   ceil(tau * N) keys) nor go below about 1/N; such targets end at the nearest reachable value
//   (beta at the end of its range) and achieved_density shows it.

#include "svoo/synthetic.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <exception>
#include <numbers>
#include <string>
#include <vector>

#include "core/splitmix.hpp"
#include "cpu/gemm.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"

namespace svoo {

const char* head_kind_name(HeadKind kind) noexcept {
  switch (kind) {
    case HeadKind::spatial_local: return "spatial_local";
    case HeadKind::temporal_local: return "temporal_local";
    case HeadKind::semantic: return "semantic";
    case HeadKind::near_global: return "near_global";
  }
  return "unknown";
}

namespace {

using detail::mix_seed;
using detail::SplitMix64;

// Gaussian samples by Box-Muller on our own generator.
class Gauss {
 public:
  explicit Gauss(std::uint64_t seed) : rng_(seed) {}
  float operator()() {  // Marsaglia's polar method: two samples per accepted point
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double a, b, r2;
    do {
      a = 2.0 * rng_.uniform() - 1.0;
      b = 2.0 * rng_.uniform() - 1.0;
      r2 = a * a + b * b;
    } while (r2 >= 1.0 || r2 == 0.0);
    const double m = std::sqrt(-2.0 * std::log(r2) / r2);
    spare_ = static_cast<float>(b * m);
    has_spare_ = true;
    return static_cast<float>(a * m);
  }
  SplitMix64& rng() { return rng_; }

 private:
  SplitMix64 rng_;
  float spare_ = 0;
  bool has_spare_ = false;
};

// RoPE layout of one head dim (Wan2.1's split).
struct Rope {
  int pairs = 0;
  std::vector<int> axis;        // per pair
  std::vector<double> freq;     // per pair
  std::vector<double> span;     // per pair: largest angle difference on the grid, freq * (extent - 1)
  std::vector<std::vector<float>> cos_at, sin_at;  // per pair, per position on its axis

  Rope(int dim, int frames, int height, int width) : pairs(dim / 2) {
    const int hw = pairs / 3, t = pairs - 2 * hw;
    const int count[3] = {t, hw, hw};
    const int extent[3] = {frames, height, width};
    for (int a = 0; a < 3; ++a) {
      for (int i = 0; i < count[a]; ++i) {
        axis.push_back(a);
        const double f = std::pow(10000.0, -2.0 * i / (2.0 * count[a]));
        freq.push_back(f);
        span.push_back(f * (extent[a] - 1));
        cos_at.emplace_back(), sin_at.emplace_back();
        for (int x = 0; x < extent[a]; ++x) {
          cos_at.back().push_back(static_cast<float>(std::cos(x * f)));
          sin_at.back().push_back(static_cast<float>(std::sin(x * f)));
        }
      }
    }
  }
};

// The moving blobs, shared by all heads: label per token (objects == background).
std::vector<int> scene_labels(const SyntheticConfig& c) {
  struct Blob {
    double y0, x0, ay, ax, wy, wx, py, px, r;
  };
  SplitMix64 rng(mix_seed(c.seed, 0x7363656e65ULL));
  const double H = c.height, W = c.width, F = c.frames;
  std::vector<Blob> blobs(static_cast<std::size_t>(c.objects));
  for (Blob& b : blobs) {
    b.r = std::max(1.0, (0.08 + 0.10 * rng.uniform()) * std::min(H, W));
    b.y0 = H * (0.15 + 0.7 * rng.uniform());
    b.x0 = W * (0.15 + 0.7 * rng.uniform());
    b.ay = 0.15 * H * rng.uniform();  // the path's extent
    b.ax = 0.25 * W * rng.uniform();
    b.wy = 2.0 * std::numbers::pi / (F * (1.5 + 2.0 * rng.uniform()));  // under one period per clip
    b.wx = 2.0 * std::numbers::pi / (F * (1.5 + 2.0 * rng.uniform()));
    b.py = 2.0 * std::numbers::pi * rng.uniform();
    b.px = 2.0 * std::numbers::pi * rng.uniform();
  }
  std::vector<int> label(static_cast<std::size_t>(c.frames) * c.height * c.width, c.objects);
  for (int t = 0; t < c.frames; ++t) {
    for (int o = 0; o < c.objects; ++o) {
      const Blob& b = blobs[o];
      const double cy = b.y0 + b.ay * std::sin(b.wy * t + b.py), cx = b.x0 + b.ax * std::sin(b.wx * t + b.px);
      for (int y = 0; y < c.height; ++y) {
        for (int x = 0; x < c.width; ++x) {
          const double d = std::hypot(y - cy, x - cx) / b.r;
          if (d >= 1.0) continue;
          int& l = label[(static_cast<std::size_t>(t) * c.height + y) * c.width + x];
          if (l == c.objects) {
            l = o;
          } else {  // overlap: the blob nearer relative to its radius wins
            const Blob& p = blobs[l];
            const double pcy = p.y0 + p.ay * std::sin(p.wy * t + p.py), pcx = p.x0 + p.ax * std::sin(p.wx * t + p.px);
            if (d < std::hypot(y - pcy, x - pcx) / p.r) l = o;
          }
        }
      }
    }
  }
  return label;
}

// Structure of a head kind, per axis (t, h, w): the amplitude of u per complex pair and the noise
// standard deviation per dimension; and the object-embedding amplitude per dimension. Locality
// needs the kernel's drop over a few tokens (~ amp^2) to beat the cross terms u . noise
// (~ amp * noise * sqrt(pairs)), hence large amplitudes and small noise on the local axes.
struct KindParams {
  double amp[3];
  double noise[3];
  double semantic;
};
KindParams params_of(HeadKind kind) {
  switch (kind) {
    // (h, w) kernel dominant, a faint temporal one: nearby positions in every frame.
    case HeadKind::spatial_local: return {{1.0, 6.0, 6.0}, {1.2, 0.4, 0.4}, 0.0};
    // A strong temporal kernel and a stronger (h, w) one: same (h, w) first, ranked by frame distance.
    case HeadKind::temporal_local: return {{4.0, 16.0, 16.0}, {0.3, 0.3, 0.3}, 0.0};
    // Object identity dominates; a faint (h, w) kernel favours the near part of the object.
    case HeadKind::semantic: return {{0.0, 0.5, 0.5}, {1.0, 1.0, 1.0}, 1.6};
    // Weak everything: mostly noise, so high densities are natural.
    case HeadKind::near_global: return {{0.3, 0.3, 0.3}, {1.0, 1.0, 1.0}, 0.4};
  }
  return {{0, 0, 0}, {1, 1, 1}, 0};
}

// Default targets: a spread like the reference profiles (mean ~0.26), dealt by kind so that local
// heads get the sparse values and near-global heads the dense ones.
double default_target(HeadKind kind, int nth_of_kind) {
  static const double table[4][3] = {
      {0.03, 0.08, 0.15},  // spatial_local
      {0.05, 0.10, 0.18},  // temporal_local
      {0.12, 0.22, 0.30},  // semantic
      {0.40, 0.60, 0.85},  // near_global
  };
  return table[static_cast<int>(kind)][nth_of_kind % 3];
}

void validate(const SyntheticConfig& c) {
  auto need = [](bool ok, const std::string& what) {
    require(ok, ErrorKind::invalid_argument, "make_synthetic_layer: " + what);
  };
  need(c.frames >= 1, "frames must be >= 1, got " + std::to_string(c.frames));
  need(c.height >= 1, "height must be >= 1, got " + std::to_string(c.height));
  need(c.width >= 1, "width must be >= 1, got " + std::to_string(c.width));
  need(c.heads >= 1, "heads must be >= 1, got " + std::to_string(c.heads));
  need(c.dim >= 8 && c.dim % 2 == 0, "dim must be even and >= 8, got " + std::to_string(c.dim));
  need(c.dtype == DType::bf16 || c.dtype == DType::f16 || c.dtype == DType::f32,
       std::string("dtype must be bf16, f16 or f32, got ") + dtype_name(c.dtype));
  need(c.target_density.empty() || c.target_density.size() == static_cast<std::size_t>(c.heads),
       "target_density must be empty or have `heads` (" + std::to_string(c.heads) + ") entries, got " +
           std::to_string(c.target_density.size()));
  for (std::size_t h = 0; h < c.target_density.size(); ++h)
    need(c.target_density[h] > 0.0 && c.target_density[h] <= 1.0,
         "target_density[" + std::to_string(h) + "] must be in (0, 1], got " + std::to_string(c.target_density[h]));
  need(c.kinds.empty() || c.kinds.size() == static_cast<std::size_t>(c.heads),
       "kinds must be empty or have `heads` (" + std::to_string(c.heads) + ") entries, got " +
           std::to_string(c.kinds.size()));
  need(c.tau > 0.0 && c.tau <= 1.0, "tau must be in (0, 1], got " + std::to_string(c.tau));
  need(c.calibration_rows >= 1, "calibration_rows must be >= 1, got " + std::to_string(c.calibration_rows));
  need(c.objects >= 0, "objects must be >= 0, got " + std::to_string(c.objects));
  const double tokens = double(c.frames) * c.height * c.width;
  need(tokens <= 1e8, "frames * height * width is too large: " + std::to_string(tokens));
}

// Everything one head needs, built in fp32: RoPE'd q (before the temperature) and k, and v.
struct HeadData {
  std::vector<float> q, k, v;
};

HeadData build_head(const SyntheticConfig& c, int head, HeadKind kind, const Rope& rope,
                    const std::vector<int>& label) {
  const int D = c.dim, P = rope.pairs, labels = c.objects + 1;
  const std::int64_t N = static_cast<std::int64_t>(c.frames) * c.height * c.width;
  const std::uint64_t hs = mix_seed(c.seed, 0x68656164ULL + static_cast<std::uint64_t>(head));
  Gauss g(mix_seed(hs, 1));
  const KindParams kp = params_of(kind);

  // Shared positional direction u (amplitude by kind, random phase per pair).
  std::vector<float> u(static_cast<std::size_t>(D));
  for (int p = 0; p < P; ++p) {
    const double a = kp.amp[rope.axis[p]];
    const double phase = 2.0 * std::numbers::pi * g.rng().uniform();
    u[2 * p] = static_cast<float>(a * std::cos(phase));
    u[2 * p + 1] = static_cast<float>(a * std::sin(phase));
  }
  // Object embeddings on the low-frequency pairs (RoPE turns them by < 0.5 rad over the grid);
  // if the grid leaves too few such pairs, the P/4 lowest-span pairs.
  std::vector<int> order(static_cast<std::size_t>(P));
  for (int p = 0; p < P; ++p) order[p] = p;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return rope.span[a] < rope.span[b]; });
  int low = 0;
  while (low < P && rope.span[order[low]] <= 0.5) ++low;
  low = std::max(low, std::max(1, P / 4));
  std::vector<float> emb(static_cast<std::size_t>(labels) * D, 0.0f), vemb(static_cast<std::size_t>(labels) * D);
  for (int l = 0; l < labels; ++l) {
    for (int j = 0; j < low; ++j) {
      const int p = order[j];
      emb[l * D + 2 * p] = static_cast<float>(kp.semantic * g());
      emb[l * D + 2 * p + 1] = static_cast<float>(kp.semantic * g());
    }
    for (int d = 0; d < D; ++d) vemb[l * D + d] = g();
  }

  HeadData hd;
  hd.q.resize(static_cast<std::size_t>(N) * D);
  hd.k.resize(hd.q.size());
  hd.v.resize(hd.q.size());
  const int hw = c.height * c.width;
  for (std::int64_t n = 0; n < N; ++n) {
    const int l = label[n];
    float* q = &hd.q[n * D];
    float* k = &hd.k[n * D];
    float* v = &hd.v[n * D];
    for (int d = 0; d < D; ++d) {
      const float sd = static_cast<float>(kp.noise[rope.axis[d / 2]]);
      q[d] = u[d] + emb[l * D + d] + sd * g();
      k[d] = u[d] + emb[l * D + d] + sd * g();
      v[d] = vemb[l * D + d] + 0.5f * g();
    }
    const int at[3] = {static_cast<int>(n / hw), static_cast<int>((n % hw) / c.width), static_cast<int>(n % c.width)};
    for (int p = 0; p < P; ++p) {  // rotate pair p by position * freq on its axis
      const float cs = rope.cos_at[p][at[rope.axis[p]]], sn = rope.sin_at[p][at[rope.axis[p]]];
      for (float* x : {q, k}) {
        const float a = x[2 * p], b = x[2 * p + 1];
        x[2 * p] = a * cs - b * sn;
        x[2 * p + 1] = a * sn + b * cs;
      }
    }
  }
  return hd;
}

// exp(x) for x <= 0, written so that the compiler vectorises the calibration loop (no float
// comparisons, which trapping-math keeps as branches): 2^(x log2 e) split into an integer and a
// fraction in (-1, 0], the fraction by a degree-8 Taylor polynomial (relative error < 2e-7, far
// below what moves a tau-count). Results under 2^-126 come out as a value <= 2^-126 instead of
// underflowing to 0: a mass no tau < 1 can see. |x log2 e| must stay below 2^31 (logits are
// bounded and beta <= 1e4).
inline float exp_nonpositive(float x) {
  const float t = x * 1.44269504f;
  const int i0 = static_cast<int>(t);  // truncation toward zero
  const float f = (t - static_cast<float>(i0)) * 0.693147181f;
  const int i = i0 < -126 ? -126 : i0;
  float p = 1.0f / 40320.0f;
  p = p * f + 1.0f / 5040.0f;
  p = p * f + 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f;
  p = p * f + 1.0f / 24.0f;
  p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  return p * std::bit_cast<float>(static_cast<std::uint32_t>(i + 127) << 23);
}

// tau-density of softmax(beta * logits) over the sampled rows, logits [rows, n] (already scaled
// by 1/sqrt(D)), each row's maximum given.
double density_at(double beta, const std::vector<float>& logits, const std::vector<float>& row_max,
                  std::int64_t n, double tau, std::vector<float>& p) {
  const auto rows = static_cast<std::int64_t>(row_max.size());
  p.resize(static_cast<std::size_t>(n));
  const float b = static_cast<float>(beta);
  double sum = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = &logits[r * n];
    const float m = row_max[r];
    float* pp = p.data();
    for (std::int64_t j = 0; j < n; ++j) pp[j] = exp_nonpositive(b * (x[j] - m));
    sum += static_cast<double>(tau_count(pp, n, tau));
  }
  return sum / static_cast<double>(rows) / static_cast<double>(n);
}

// log(beta) such that density(beta) ~ target, starting from log(x0); density falls as beta grows.
// Secant steps on log(density) vs log(beta) until the target is bracketed, then false position
// (Illinois) kept inside the middle 80% of the bracket, so each step also shrinks it.
double calibrate(double target, double tau, const std::vector<float>& logits, const std::vector<float>& row_max,
                 std::int64_t n, double x0, double hi_limit) {
  constexpr double kRelTol = 0.005;  // stop at |log(density / target)| <= 0.005 (0.5%)
  const double lo_limit = std::log(1e-4);
  std::vector<float> p;
  auto f = [&](double x) { return std::log(density_at(std::exp(x), logits, row_max, n, tau, p) / target); };
  double best = 0, fbest = INFINITY;
  bool have_a = false, have_b = false;  // a: density above target (f > 0), b: below (f < 0)
  double a = 0, fa = 0, b = 0, fb = 0, xp = 0, fp = 0;
  double x = std::clamp(x0, lo_limit, hi_limit);
  int side = 0;
  for (int it = 0; it < 60; ++it) {
    const double fx = f(x);
    if (std::fabs(fx) < std::fabs(fbest)) best = x, fbest = fx;
    if (std::fabs(fx) <= kRelTol) break;
    if (fx > 0) {
      if (have_a && have_b && side == +1) fb *= 0.5;  // Illinois: the stale end loses weight
      a = x, fa = fx, have_a = true, side = +1;
    } else {
      if (have_a && have_b && side == -1) fa *= 0.5;
      b = x, fb = fx, have_b = true, side = -1;
    }
    double next;
    if (have_a && have_b) {
      if (b - a < 1e-7) break;
      next = std::clamp(a + fa * (b - a) / (fa - fb), a + 0.1 * (b - a), b - 0.1 * (b - a));
    } else {
      // Not bracketed yet: secant through the last two points (slope -1 before there are two),
      // moving at least 0.1 and at most 3 (a factor e^3 in beta) the right way.
      const double slope = (it > 0 && x != xp && (fx - fp) / (x - xp) < 0) ? (fx - fp) / (x - xp) : -1.0;
      const double step = std::clamp(std::fabs(fx / slope), 0.1, 3.0);
      next = fx > 0 ? std::min(x + step, hi_limit) : std::max(x - step, lo_limit);
      if (next == x) break;  // unreachable target: the nearest end of the range
    }
    xp = x, fp = fx, x = next;
  }
  return best;
}

}  // namespace

SyntheticLayer make_synthetic_layer(const SyntheticConfig& config) {
  validate(config);
  const SyntheticConfig& c = config;
  const std::int64_t N = static_cast<std::int64_t>(c.frames) * c.height * c.width;
  const int D = c.dim;

  SyntheticLayer layer;
  for (int h = 0; h < c.heads; ++h) {
    const HeadKind kind = c.kinds.empty() ? static_cast<HeadKind>(h % 4) : c.kinds[h];
    layer.kinds.push_back(kind);
    if (c.target_density.empty()) {
      int nth = 0;
      for (int j = 0; j < h; ++j) nth += layer.kinds[j] == kind;
      layer.target_density.push_back(default_target(kind, nth));
    } else {
      layer.target_density.push_back(c.target_density[h]);
    }
  }
  layer.q = HostTensor(c.dtype, {c.heads, N, D});
  layer.k = HostTensor(c.dtype, {c.heads, N, D});
  layer.v = HostTensor(c.dtype, {c.heads, N, D});
  layer.temperature.assign(c.heads, 1.0);

  const Rope rope(D, c.frames, c.height, c.width);
  const std::vector<int> label = scene_labels(c);
  const RowSample sample{c.calibration_rows, mix_seed(c.seed, 0x63616c6962ULL)};
  const std::vector<std::int64_t> rows = sample_rows(N, sample);
  const auto R = static_cast<std::int64_t>(rows.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<std::exception_ptr> errors(c.heads);

  // Heads are independent (own random streams), so the result does not depend on the schedule.
#pragma omp parallel for schedule(dynamic, 1)
  for (int h = 0; h < c.heads; ++h) {
    try {
      HeadData hd = build_head(c, h, layer.kinds[h], rope, label);
      const std::int64_t base = static_cast<std::int64_t>(h) * N * D;
      // k and v do not depend on beta: store them now and calibrate against the rounded k.
      for (std::int64_t i = 0; i < N * D; ++i) {
        layer.k.set(base + i, hd.k[i]);
        hd.k[i] = layer.k.get(base + i);
        layer.v.set(base + i, hd.v[i]);
      }
      std::vector<float> qrows(static_cast<std::size_t>(R) * D), logits(static_cast<std::size_t>(R) * N), mx(R);
      for (std::int64_t r = 0; r < R; ++r)
        std::copy_n(&hd.q[rows[r] * D], D, &qrows[r * D]);
      cpu::gemm_nt(R, N, D, scale, qrows.data(), D, hd.k.data(), D, 0.0f, logits.data(), N);
      for (std::int64_t r = 0; r < R; ++r) mx[r] = *std::max_element(&logits[r * N], &logits[r * N] + N);
      // f16 saturates at 65504: keep beta * |q| well inside its range.
      float qmax = 0.0f;
      for (float x : hd.q) qmax = std::max(qmax, std::fabs(x));
      double log_beta_max = std::log(1e4);
      if (c.dtype == DType::f16) log_beta_max = std::min(log_beta_max, std::log(3.0e4 / std::max(qmax, 1e-6f)));
      // Start where the logits' spread is about 2 (RMS deviation from their row mean).
      double var = 0.0;
      for (std::int64_t r = 0; r < R; ++r) {
        double s1 = 0, s2 = 0;
        for (std::int64_t j = 0; j < N; ++j) s1 += logits[r * N + j], s2 += double(logits[r * N + j]) * logits[r * N + j];
        var += std::max(0.0, s2 / N - (s1 / N) * (s1 / N)) / R;
      }
      const double x0 = std::log(2.0 / std::sqrt(std::max(var, 1e-12)));
      const double beta = std::exp(calibrate(layer.target_density[h], c.tau, logits, mx, N, x0, log_beta_max));
      layer.temperature[h] = beta;
      for (std::int64_t i = 0; i < N * D; ++i) layer.q.set(base + i, static_cast<float>(beta * hd.q[i]));
    } catch (...) {
      errors[h] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  layer.achieved_density = tau_density(layer.q.view(), layer.k.view(), c.tau, sample);
  return layer;
}

}  // namespace svoo
