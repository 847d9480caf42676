// Benchmark (not a test) of the CUDA sparse attention kernel at video-DiT shapes, on layouts from
// real co-clustering of the synthetic workload (one plan per shape), at block densities near 5,
// 10, 15, 20 and 30 % (every row keeps its top-scoring key clusters, as many as that takes). Reports ms,
// the measured block density, effective TFLOP/s (4 * kept pairs * 128 / time) and our dense path.
// Time cuDNN dense attention in the same run for the ratio (../shared/tools/dense_baseline.py).
//   svoo_cuda_attention_bench [--json out.json] [--shape NAME]... [--kq Q --kk K] [--align A [--candidates R]]
//                             [--profile-dense] [--profile-density D]
// --align A: the query clusters aligned to multiples of A rows by the planner (ClusterConfig::
// query_align) before the densities are timed.
// --profile-density D: two sparse calls at block density D on each picked shape and nothing timed,
// for a profiler (Nsight Compute: bench/device_run.sh ncu with NCU_ARGS).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "../tests/gpu/device_buffer.hpp"
#include "power_sampler.hpp"
#include "timing.hpp"
#include "wan_shapes.hpp"
#include "svoo/cuda.hpp"
#include "svoo/synthetic.hpp"

namespace {

using svoo::test::cuda_ok;

double median_ms(const std::function<void()>& fn) { return svoo::bench::median_ms(fn, 5); }

}  // namespace

int main(int argc, char** argv) {
  using namespace svoo;
  std::string json_path;
  std::vector<std::string> only;
  bool profile_dense = false;
  double profile_density = 0.0;
  CLI::App app{"Benchmark of the CUDA sparse attention kernel (see the file's header)", "svoo_cuda_attention_bench"};
  bench::add_shape_options(app, json_path, only);
  int kq = 256, kk = 1024;  // the released defaults (stated at 720p)
  app.add_option("--kq", kq, "query clusters per head")->check(CLI::Range(1, 1 << 16));
  app.add_option("--kk", kk, "key clusters per head (at most 2048)")->check(CLI::Range(1, 2048));
  int align = 0, candidates = 8;
  app.add_option("--align", align, "query-cluster alignment (ClusterConfig::query_align; 0: off)")
      ->check(CLI::Range(0, 256));
  app.add_option("--candidates", candidates, "alignment: taking clusters a moved row may try")->check(CLI::Range(1, 64));
  auto* dense_flag =
      app.add_flag("--profile-dense", profile_dense, "two dense calls on random data, for a profiler, and nothing else");
  app.add_option("--profile-density", profile_density, "two sparse calls at this block density, for a profiler")
      ->check(CLI::Range(0.001, 1.0))
      ->excludes(dense_flag);
  CLI11_PARSE(app, argc, argv);
  if (profile_dense) {
    if (!cuda::available()) return 77;
    HostTensor hq(DType::bf16, {12, 32760, 128});
    for (std::int64_t i = 0; i < hq.numel(); ++i) hq.set(i, 0.01f * static_cast<float>((i * 7919) % 201 - 100));
    test::DeviceTensor q(hq), o(DType::bf16, {12, 32760, 128});
    for (int r = 0; r < 2; ++r) cuda::dense_attention(q.view(), q.view(), q.view(), o.view());
    cuda_ok(cudaDeviceSynchronize(), "profile");
    return 0;
  }
  if (!cuda::available()) return 77;
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("# %s\n", prop.name);
  bench::PowerSampler power;
  std::string json;
  for (const bench::WanShape& s : bench::wan_shapes()) {
    if (!bench::picked(only, s.name)) continue;
    SyntheticConfig sc;
    sc.heads = s.heads, sc.frames = s.frames, sc.height = s.height, sc.width = s.width;
    sc.calibration_rows = 128;
    const SyntheticLayer layer = make_synthetic_layer(sc);
    const std::int64_t N = layer.tokens();
    const int D = 128;
    test::DeviceTensor q(layer.q), k(layer.k), v(layer.v), o(DType::bf16, {s.heads, N, D});
    cuda::Planner plan({s.heads, N, N, D, kq, kk, align});
    ClusterConfig cfg;
    cfg.kq = kq, cfg.kk = kk;
    cfg.query_align = align, cfg.align_candidates = candidates;
    const double cluster_ms = median_ms([&] { plan.cluster(q.view(), k.view(), cfg); });
    if (align > 1) {
      const Clustering c = plan.download_clustering();
      std::printf("%s: query alignment %d (%d candidates): 64-row chunks empty %.2f %% of the rows, 128-row items %.2f %%\n",
                  s.name, align, candidates, 100.0 * empty_chunk_rows(c.q_sizes, 64) / c.q_labels.size(),
                  100.0 * empty_chunk_rows(c.q_sizes, 128) / c.q_labels.size());
    }
    const std::vector<double> densities =
        profile_density > 0 ? std::vector<double>{profile_density} : std::vector<double>{0.05, 0.10, 0.15, 0.20, 0.30};
    power.start();
    const double dense_ms = profile_density > 0 ? 0.0 : median_ms([&] { cuda::dense_attention(q.view(), k.view(), v.view(), o.view()); });
    power.stop();
    const double dense_flops = 4.0 * s.heads * double(N) * N * D;
    if (profile_density <= 0) {
      std::printf("%s: %d heads x %lld tokens, Kq/Kk %d/%d, clustering %.2f ms; our dense path %.2f ms (%.0f TFLOP/s, %.0f MHz, %.0f W)\n", s.name, s.heads,
                  (long long)N, kq, kk, cluster_ms, dense_ms, dense_flops / dense_ms / 1e9, power.mean_mhz(), power.mean_watts());
      std::printf("%8s %8s %9s %9s %10s %6s %5s\n", "target", "density", "ms", "TFLOP/s", "vs dense", "MHz", "W");
    }
    for (double d : densities) {
      // Keep the same number of top-scoring key clusters in every row, that number chosen by
      // bisection so that the block density (fraction of the score matrix computed) is d.
      double lo = 0.0, hi = 1.0, density = 0, pairs = 0;
      for (int it = 0; it < 14; ++it) {
        const double f = 0.5 * (lo + hi);
        SelectionConfig sel;
        sel.top_p = 0.0, sel.floor_lo = sel.floor_hi = f;
        plan.select(sel, std::vector<double>(s.heads, f));
        pairs = static_cast<double>(plan.download_layout().kept_pairs());
        density = pairs / (double(s.heads) * N * N);
        (density < d ? lo : hi) = f;
      }
      if (profile_density > 0) {
        for (int r = 0; r < 2; ++r) cuda::sparse_attention(q.view(), k.view(), v.view(), plan, o.view());
        cuda_ok(cudaDeviceSynchronize(), "profile");
        continue;
      }
      power.start();
      const double ms = median_ms([&] { cuda::sparse_attention(q.view(), k.view(), v.view(), plan, o.view()); });
      power.stop();
      const double tflops = 4.0 * pairs * D / ms / 1e9;
      std::printf("%8.2f %8.4f %9.3f %9.1f %9.2fx %6.0f %5.0f\n", d, density, ms, tflops, dense_ms / ms, power.mean_mhz(),
                  power.mean_watts());
      char buf[512];
      std::snprintf(buf, sizeof buf,
                    " {\"shape\": \"%s\", \"heads\": %d, \"tokens\": %lld, \"device\": \"%s\", \"target_density\": %.2f, "
                    "\"kq\": %d, \"kk\": %d, \"align\": %d, \"block_density\": %.5f, \"sparse_ms\": %.4f, \"effective_tflops\": %.2f, \"svoo_dense_ms\": %.4f, "
                    "\"sm_mhz\": %.0f, \"watts\": %.0f}",
                    s.name, s.heads, (long long)N, prop.name, d, kq, kk, align, density, ms, tflops, dense_ms, power.mean_mhz(),
                    power.mean_watts());
      json += std::string(json.empty() ? "" : ",\n") + buf;
    }
  }
  return svoo::bench::write_json_rows(json_path, json) ? 0 : 1;
}
