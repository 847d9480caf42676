// Benchmark (not a test) of the CUDA sparse attention kernel at video-DiT shapes, on layouts from
// real co-clustering of the synthetic workload (one plan per shape), at block densities near 5,
// 10, 15, 20 and 30 % (every row keeps its top-scoring key clusters, as many as that takes). Reports ms,
// the measured block density, effective TFLOP/s (4 * kept pairs * 128 / time) and our dense path.
// Time cuDNN dense attention in the same run for the ratio (../shared/tools/dense_baseline.py).
//   svoo_cuda_attention_bench [--json out.json] [--shape NAME]... [--kq Q --kk K] [--align A [--candidates R]
//                             [--align-passes P]]
//                             [--profile-dense] [--profile-density D] [--uniform R]...
// --align A: the query clusters aligned to multiples of A rows by the planner (ClusterConfig::
// query_align) before the densities are timed.
// --profile-density D: two sparse calls at block density D on each picked shape and nothing timed,
// for a profiler (Nsight Compute: bench/device_run.sh ncu with NCU_ARGS).
// --uniform R (repeatable): instead, the kernel's cost model measured on made-up layouts: query
// clusters of exactly R consecutive tokens, key clusters of 32 (64 at 720p), each query cluster keeping T random
// key clusters' worth of 128-key tiles (T = 2 .. 128). A line through the time of an item against T
// gives the item's fixed cost (start and finish) and a key tile's, both against the dense call's tile.
#include <cuda_runtime.h>

#include <algorithm>
#include <exception>
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

#if defined(SVOO_ATTN_TRACE)
namespace svoo::cuda::detail {
void attention_trace_reset();
void attention_trace_print(std::FILE* f);
}  // namespace svoo::cuda::detail
#endif

namespace {

using svoo::test::cuda_ok;

double median_ms(const std::function<void()>& fn) { return svoo::bench::median_ms(fn, 5); }

// --uniform: items of `rows` query rows (one item a cluster), each with `tiles` whole key tiles of
// randomly placed 32-key clusters, so that nothing is ragged; the time of an item (an SM's share)
// against tiles is then the kernel's per-item cost plus its per-tile cost.
void uniform_study(const svoo::bench::WanShape& s, const std::vector<int>& rows_list, std::vector<int> tiles_list,
                   std::string& json) {
  using namespace svoo;
  constexpr int kD = 128;
  const std::int64_t N = s.tokens(), H = s.heads;
  // Key clusters of 32 keys, or 64 where 32 would make more than the kernel's 2,048 (720p).
  const int kKeyCluster = (N + 31) / 32 <= 2048 ? 32 : 64;
  HostTensor hq(DType::bf16, {H, N, kD}), hk(DType::bf16, {H, N, kD}), hv(DType::bf16, {H, N, kD});
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  auto rnd = [&] {  // splitmix64
    std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  for (HostTensor* t : {&hq, &hk, &hv})
    for (std::int64_t i = 0; i < t->numel(); ++i) t->set(i, static_cast<float>(static_cast<double>(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0));
  test::DeviceTensor q(hq), k(hk), v(hv), o(DType::bf16, {H, N, kD});
  const int kk = static_cast<int>((N + kKeyCluster - 1) / kKeyCluster);
  const double dense_ms = median_ms([&] { cuda::dense_attention(q.view(), k.view(), v.view(), o.view()); });
  const double dense_tiles = double(H) * ((N + 127) / 128) * ((N + 127) / 128);
  const int sms = [] {
    int dev = 0, n = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    return n;
  }();
  const double dense_tile_us = dense_ms * 1e3 * sms / dense_tiles;  // one (128 rows, 128 keys) tile on one SM
  std::printf("%s uniform items: dense %.3f ms, a 128 x 128 tile %.3f us an SM (%d SMs)\n", s.name, dense_ms, dense_tile_us, sms);
  std::printf("%6s %6s %7s %9s %9s %10s %9s\n", "rows", "tiles", "items", "ms", "TFLOP/s", "us/item", "tiles eq");
  for (int rows : rows_list) {
    const int kq = static_cast<int>((N + rows - 1) / rows);
    cuda::Planner plan({H, N, N, kD, kq, kk, 0});
    std::vector<std::int32_t> ql(H * N), kl(H * N);
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < N; ++t) ql[h * N + t] = static_cast<std::int32_t>(t / rows), kl[h * N + t] = static_cast<std::int32_t>(t / kKeyCluster);
    test::DeviceBuffer<std::int32_t> dql(ql), dkl(kl);
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n = 0;
    if (tiles_list.empty()) tiles_list = {2, 4, 8, 16, 32, 64, 128};
    for (int tiles : tiles_list) {
      const int per = tiles * 128 / kKeyCluster;  // key clusters kept a query cluster
      if (per >= kk) break;
      std::vector<std::uint8_t> keep(static_cast<std::size_t>(H) * kq * kk, 0);
      std::vector<int> pick(kk - 1);  // the last key cluster may be short: never kept
      for (std::int64_t c = 0; c < H * kq; ++c) {
        for (int j = 0; j < kk - 1; ++j) pick[j] = j;
        for (int j = 0; j < per; ++j) {
          const int r = j + static_cast<int>(rnd() % static_cast<std::uint64_t>(kk - 1 - j));
          std::swap(pick[j], pick[r]);
          keep[c * kk + pick[j]] = 1;
        }
      }
      test::DeviceBuffer<std::uint8_t> dkeep(keep);
      plan.load_plan(dql.data(), dkl.data(), dkeep.data());
      const double pairs = static_cast<double>(plan.download_layout().kept_pairs());
      const double ms = median_ms([&] { cuda::sparse_attention(q.view(), k.view(), v.view(), plan, o.view()); });
      const double items = double(H) * kq;
      const double us_item = ms * 1e3 * sms / items;
      std::printf("%6d %6d %7.0f %9.3f %9.1f %10.3f %9.2f\n", rows, tiles, items, ms, 4.0 * pairs * kD / ms / 1e9, us_item,
                  us_item / dense_tile_us);
      sx += tiles, sy += us_item, sxx += double(tiles) * tiles, sxy += double(tiles) * us_item, ++n;
#if defined(SVOO_ATTN_TRACE)
      // A diagnostics build: block 0's timeline of one more call.
      cuda::detail::attention_trace_reset();
      cuda::sparse_attention(q.view(), k.view(), v.view(), plan, o.view());
      cuda_ok(cudaDeviceSynchronize(), "trace");
      std::printf("# trace rows %d tiles %d\n", rows, tiles);
      cuda::detail::attention_trace_print(stdout);
#endif
      char buf[320];
      std::snprintf(buf, sizeof buf,
                    " {\"shape\": \"%s\", \"uniform_rows\": %d, \"tiles\": %d, \"items\": %.0f, \"sparse_ms\": %.4f, "
                    "\"effective_tflops\": %.2f, \"dense_ms\": %.4f}",
                    s.name, rows, tiles, items, ms, 4.0 * pairs * kD / ms / 1e9, dense_ms);
      json += std::string(json.empty() ? "" : ",\n") + buf;
    }
    if (n < 2) continue;
    const double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx), icept = (sy - slope * sx) / n;
    std::printf("  rows %d: an item costs %.2f + %.3f x tiles us, i.e. %.2f + %.3f x tiles dense tile times\n", rows, icept,
                slope, icept / dense_tile_us, slope / dense_tile_us);
  }
}

}  // namespace

int run(int argc, char** argv) {
  using namespace svoo;
  std::string json_path;
  std::vector<std::string> only;
  bool profile_dense = false;
  double profile_density = 0.0;
  CLI::App app{"Benchmark of the CUDA sparse attention kernel (see the file's header)", "svoo_cuda_attention_bench"};
  bench::add_shape_options(app, json_path, only);
  int kq = 256, kk = 1024;  // the released defaults (stated at 720p)
  auto* kq_opt = app.add_option("--kq", kq, "query clusters per head")->check(CLI::Range(1, 1 << 16));
  auto* kk_opt = app.add_option("--kk", kk, "key clusters per head (at most 2048)")->check(CLI::Range(1, 2048));
  int align = 0, candidates = 8, passes = ClusterConfig{}.align_passes;
  auto* align_opt = app.add_option("--align", align, "query-cluster alignment (ClusterConfig::query_align; 0: off)")
      ->check(CLI::Range(0, 256));
  app.add_option("--candidates", candidates, "alignment: taking clusters a moved row may try")->check(CLI::Range(1, 64));
  app.add_option("--align-passes", passes, "alignment: passes (ClusterConfig::align_passes)")
      ->check(CLI::Range(1, kMaxAlignPasses));
  auto* dense_flag =
      app.add_flag("--profile-dense", profile_dense, "two dense calls on random data, for a profiler, and nothing else");
  auto* density_opt = app.add_option("--profile-density", profile_density, "two sparse calls at this block density, for a profiler")
      ->check(CLI::Range(0.001, 1.0))
      ->excludes(dense_flag);
  std::vector<int> uniform, uniform_tiles;
  auto* uniform_opt =
      app.add_option("--uniform", uniform, "the per-item and per-tile costs on made-up layouts of clusters of this many rows")
          ->check(CLI::Range(16, 4096))
          ->excludes(kq_opt)
          ->excludes(kk_opt)
          ->excludes(align_opt)
          ->excludes(dense_flag)
          ->excludes(density_opt);
  app.add_option("--uniform-tiles", uniform_tiles, "--uniform: only these key tiles an item (default 2 .. 128)")
      ->check(CLI::Range(1, 4096))
      ->needs(uniform_opt);
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
    if (!uniform.empty()) {
      uniform_study(s, uniform, uniform_tiles, json);
      continue;
    }
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
    cfg.query_align = align, cfg.align_candidates = candidates, cfg.align_passes = passes;
    const double cluster_ms = median_ms([&] { plan.cluster(q.view(), k.view(), cfg); });
    if (align > 1) {
      const Clustering c = plan.download_clustering();
      std::printf("%s: query alignment %d (%d candidates, %d passes): 64-row chunks empty %.2f %% of the rows, 128-row "
                  "items %.2f %%\n",
                  s.name, align, candidates, passes, 100.0 * empty_chunk_rows(c.q_sizes, 64) / c.q_labels.size(),
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
#if defined(SVOO_ATTN_TRACE)
        cuda::detail::attention_trace_reset();
        cuda::sparse_attention(q.view(), k.view(), v.view(), plan, o.view());
        cuda_ok(cudaDeviceSynchronize(), "trace");
        std::printf("# trace %s density %.2f\n", s.name, d);
        cuda::detail::attention_trace_print(stdout);
#endif
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

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // e.g. a layout the kernel does not take
    std::fprintf(stderr, "svoo_cuda_attention_bench: %s\n", e.what());
    return 2;
  }
}
