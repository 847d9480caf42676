// GPU check of the device tau-density (svoo::cuda::tau_density) against the CPU on sampled rows,
// over a grid of heads, tokens (ragged included), tau, dtypes and row shapes (near-uniform, normal,
// very peaked, the synthetic workload). Exit 77 without a GPU, 1 on any failure.
//
// Two comparisons:
//  - per row: the GPU's bracket [lo, hi] must contain the count of an fp32 CPU reference row
//    (scores summed in double and rounded to fp32, p = expf(s - max), svoo::tau_count), up to
//    kRowSlack keys for the rounding differences of the scores (bf16 products summed in another
//    order); the excess beyond the bracket is reported;
//  - per head: |GPU density - svoo::tau_density| <= bound + kHeadSlack, where bound is the GPU's
//    own mean bracket width / k_tokens.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "device_buffer.hpp"
#include "svoo/cuda.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"
#include "svoo/synthetic.hpp"

namespace svoo {
namespace {

int g_failures = 0;
constexpr std::int64_t kRowSlack = 4;
constexpr double kHeadSlack = 2e-5;

struct Case {
  std::string name;
  int heads;
  std::int64_t tokens;
  DType dtype;
  float q_std, k_std;  // normal entries; q_std == 0: the synthetic workload
  std::int64_t rows;   // sampled rows (0: all)
  // > 0: every 50th key and every query carry `bend` on dimension 0, so 2 % of the keys score
  // bend^2 higher: a mass curve that bends between pass 1's thresholds, where the interpolated
  // window misses and the second round runs (density_search.hpp, interp_window).
  float bend = 0.f;
};

void run_case(const Case& cs, double& worst_diff, double& worst_bound) {
  const int H = cs.heads, D = 128;
  HostTensor q, k;
  std::int64_t N = cs.tokens;
  if (cs.q_std == 0.f) {
    SyntheticConfig sc;
    sc.heads = H, sc.dtype = cs.dtype, sc.calibration_rows = 64;
    SyntheticLayer l = make_synthetic_layer(sc);
    q = std::move(l.q), k = std::move(l.k);
    N = q.shape()[1];
  } else {
    q = HostTensor(cs.dtype, {H, N, D}), k = HostTensor(cs.dtype, {H, N, D});
    std::mt19937 rng(static_cast<unsigned>(N * 131 + H));
    std::normal_distribution<float> dist(0.f, 1.f);
    for (std::int64_t i = 0; i < q.numel(); ++i) q.set(i, dist(rng) * cs.q_std), k.set(i, dist(rng) * cs.k_std);
    if (cs.bend > 0.f)
      for (std::int64_t r = 0; r < H * N; ++r) {
        q.set(r * D, q.get(r * D) + cs.bend);
        if ((r % N) % 50 == 0) k.set(r * D, k.get(r * D) + cs.bend);
      }
  }
  const RowSample sample{cs.rows, 11};
  const auto rows = sample_rows(N, sample);
  const auto nr = static_cast<std::int64_t>(rows.size());
  // fp32 reference rows: scores of the sampled rows, once per head.
  std::vector<float> scores(static_cast<std::size_t>(H) * nr * N);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for collapse(2) schedule(dynamic, 4)
  for (int h = 0; h < H; ++h)
    for (std::int64_t i = 0; i < nr; ++i) {
      std::vector<float> qr(D);
      for (int d = 0; d < D; ++d) qr[d] = q.get((h * N + rows[i]) * D + d);
      float* s = &scores[(h * nr + i) * N];
      for (std::int64_t n = 0; n < N; ++n) {
        double acc = 0;
        const std::int64_t base = (h * N + n) * D;
        for (int d = 0; d < D; ++d) acc += static_cast<double>(qr[d]) * k.get(base + d);
        s[n] = static_cast<float>(acc) * scale;
      }
      const float mx = *std::max_element(s, s + N);
      for (std::int64_t n = 0; n < N; ++n) s[n] = std::exp(s[n] - mx);
    }
  for (double tau : {0.5, 0.9, 0.95, 0.99, 1.0}) {
    const cuda::DensityResult g = cuda::tau_density(q.view(), k.view(), tau, sample);
    const std::vector<double> c = tau_density(q.view(), k.view(), tau, sample);
    std::int64_t outside = 0, max_excess = 0, fallbacks = 0;
    double max_width = 0;
    std::vector<std::int64_t> ref(static_cast<std::size_t>(H) * nr);
#pragma omp parallel for
    for (std::int64_t x = 0; x < H * nr; ++x) ref[x] = tau_count(&scores[x * N], N, tau);
    for (std::int64_t x = 0; x < H * nr; ++x) {
      const std::int64_t excess = std::max<std::int64_t>({0, g.count_lo[x] - ref[x], ref[x] - g.count_hi[x]});
      max_excess = std::max(max_excess, excess);
      outside += excess > kRowSlack;
      max_width = std::max(max_width, double(g.count_hi[x] - g.count_lo[x]));
      if (!(g.count_lo[x] <= g.counts[x] && g.counts[x] <= g.count_hi[x])) ++outside;
    }
    double diff = 0, bound = 0, mean_d = 0;
    int bad_heads = 0;
    for (int h = 0; h < H; ++h) {
      const double dd = std::fabs(g.density[h] - c[h]);
      diff = std::max(diff, dd);
      bound = std::max(bound, g.bound[h]);
      mean_d += c[h] / H;
      fallbacks += g.fallbacks[h];
      bad_heads += dd > g.bound[h] + kHeadSlack;
    }
    worst_diff = std::max(worst_diff, diff), worst_bound = std::max(worst_bound, bound);
    std::printf("  %-28s H=%2d N=%6lld %s rows=%5lld tau=%.2f: CPU density %.5f | max|GPU-CPU| %.2e, bound %.2e, "
                "max row width %.0f, rows beyond bracket+%lld: %lld (max excess %lld), fallbacks %lld%s\n",
                cs.name.c_str(), H, (long long)N, dtype_name(cs.dtype), (long long)nr, tau, mean_d, diff, bound, max_width,
                (long long)kRowSlack, (long long)outside, (long long)max_excess, (long long)fallbacks,
                (bad_heads || outside) ? "  FAIL" : "");
    if (bad_heads || outside) ++g_failures;
  }
}

// Non-finite inputs: a NaN or an infinity in q (in a measured row) or in k is an error that names
// the problem; one in a q row that is not measured is not.
void check_nonfinite() {
  const std::int64_t H = 2, N = 700, D = 128;
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.f, 1.f);
  auto fresh = [&] {
    HostTensor t(DType::bf16, {H, N, D});
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, dist(rng));
    return t;
  };
  const RowSample sample{16, 3};
  const std::vector<std::int64_t> rows = sample_rows(N, sample);
  std::int64_t unmeasured = 0;
  while (std::find(rows.begin(), rows.end(), unmeasured) != rows.end()) ++unmeasured;
  struct Poison {
    const char* name;
    bool in_q;
    std::int64_t token;
    float value;
    bool expect_error;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Poison poisons[] = {{"NaN in a measured q row", true, rows[5], nan, true},
                            {"-inf in k", false, 123, -inf, true},
                            {"+inf in k", false, N - 1, inf, true},
                            {"NaN in a q row not measured", true, unmeasured, nan, false}};
  for (const Poison& p : poisons) {
    HostTensor q = fresh(), k = fresh();
    (p.in_q ? q : k).set((1 * N + p.token) * D + 77, p.value);  // head 1
    bool threw = false;
    std::string what;
    try {
      cuda::tau_density(q.view(), k.view(), 0.9, sample);
    } catch (const Error& e) {
      threw = true;
      what = e.what();
    }
    const bool ok = threw == p.expect_error && (!threw || what.find("NaN or infinite") != std::string::npos);
    if (!ok) ++g_failures;
    std::printf("  %-28s %s%s\n", p.name, threw ? "error: " : "no error", threw ? what.c_str() : "");
  }
  // The raw entry with a row index out of range: every density NaN (no read outside q), and the
  // same rows in range give finite ones.
  HostTensor q = fresh(), k = fresh();
  const test::DeviceTensor dq(q), dk(k);
  for (const std::int64_t bad : {std::int64_t{-1}, N, std::int64_t{1} << 40}) {
    std::vector<std::int64_t> r = rows;
    test::DeviceBuffer<std::int64_t> good_rows(r);
    r[3] = bad;
    test::DeviceBuffer<std::int64_t> bad_rows(r);
    const auto nr = static_cast<std::int64_t>(r.size());
    const std::size_t ws = cuda::tau_density_workspace_bytes(H, nr);
    test::DeviceBuffer<unsigned char> work(ws + 256);
    test::DeviceBuffer<double> dens(H);
    cuda::DensityOutputs o;
    o.density = dens.data();
    void* wsp = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(work.data()) + 255) / 256 * 256);
    cuda::tau_density(dq.view(), dk.view(), 0.9, good_rows.data(), nr, wsp, ws, o);
    const std::vector<double> good = dens.download();
    cuda::tau_density(dq.view(), dk.view(), 0.9, bad_rows.data(), nr, wsp, ws, o);
    const std::vector<double> got = dens.download();
    bool ok = true;
    for (int h = 0; h < H; ++h) ok = ok && std::isfinite(good[h]) && std::isnan(got[h]);
    if (!ok) ++g_failures;
    std::printf("  row index %-20lld %s\n", static_cast<long long>(bad), ok ? "NaN densities (in range: finite)" : "FAIL");
  }
}

}  // namespace
}  // namespace svoo

int main(int argc, char** argv) {
  using namespace svoo;
  // --quick: the small cases only (for compute-sanitizer, which slows the kernels 10-100x)
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  if (!cuda::available()) {
    std::printf("density_check: no CUDA device, skipped\n");
    return 77;
  }
  const std::vector<Case> cases = {
      {"tiny ragged, near-uniform", 1, 77, DType::bf16, 0.05f, 0.05f, 0},
      {"normal, all rows", 2, 1000, DType::bf16, 1.f, 1.5f, 0},
      {"near-uniform f16", 3, 4097, DType::f16, 0.05f, 0.1f, 96},
      {"very peaked", 2, 12345, DType::bf16, 3.f, 3.f, 96},
      {"peaked f16", 5, 30001, DType::f16, 2.f, 2.f, 48},
      {"bent mass curve, small", 2, 3000, DType::bf16, 0.3f, 0.3f, 0, 8.f},
      {"bent mass curve (second round)", 3, 20000, DType::bf16, 0.3f, 0.3f, 200, 8.f},
      {"synthetic workload", 12, 0, DType::bf16, 0.f, 0.f, 64},
      {"wan1.3b-720p normal", 12, 75600, DType::bf16, 1.f, 1.5f, 16},
      {"wan1.3b-720p near-uniform f16", 12, 75600, DType::f16, 0.1f, 0.1f, 8},
  };
  double worst_diff = 0, worst_bound = 0;
  for (const Case& c : cases) {
    if (quick && (c.tokens == 0 || c.tokens > 5000)) continue;  // tokens 0: the synthetic workload (large)
    try {
      run_case(c, worst_diff, worst_bound);
    } catch (const std::exception& e) {
      ++g_failures;
      std::printf("  FAIL %s: %s\n", c.name.c_str(), e.what());
    }
  }
  try {
    check_nonfinite();
  } catch (const std::exception& e) {
    ++g_failures;
    std::printf("  FAIL non-finite inputs: %s\n", e.what());
  }
  std::printf("density_check: worst |GPU - CPU| per head %.2e, worst bound %.2e; %d failure(s)\n", worst_diff,
              worst_bound, g_failures);
  return g_failures == 0 ? 0 : 1;
}
