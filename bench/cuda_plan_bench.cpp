// Benchmark (not a test) of the CUDA planning stage at video-DiT shapes: co-clustering (and the
// k-means baseline), scores + selection + layout, the permutations of Q, K, V and the inverse
// permutation of the output, and the whole plan replayed as a CUDA graph. Times are medians of
// CUDA-event timings after warm-up, on random normal bf16 inputs. Compare with dense attention
// timed in the same run (../shared/tools/dense_baseline.py).
//   svoo_cuda_plan_bench [--json out.json] [--shape NAME]...
//   svoo_cuda_plan_bench --breakdown   (one co-clustering iteration stage by stage at 40 x 75,600,
//     every assignment variant that runs on the device: SVOO_ASSIGN_VARIANT=0..4, then the parts of
//     select(): scores, softmax, selection, layout; the query-cluster alignment's stages at
//     Wan2.1-14B 720p and 1.3B 480p)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "../src/cuda/attention_kernel.cuh"
#include "../src/cuda/cluster_ops.cuh"
#include "../src/cuda/kernels.cuh"
#include "../tests/gpu/device_buffer.hpp"
#include "timing.hpp"
#include "wan_shapes.hpp"
#include "svoo/cuda.hpp"

namespace {

using svoo::test::cuda_ok;

struct Shape {
  std::string name;
  int heads;
  std::int64_t tokens;
  int kq, kk;
};

double median_ms(const std::function<void()>& fn) { return svoo::bench::median_ms(fn, 7); }

}  // namespace

// Times each stage of one co-clustering iteration separately (internal launchers).
void breakdown(int H, std::int64_t N, int kq, int kk) {
  using namespace svoo;
  using namespace svoo::cuda::detail;
  const int D = 128;
  HostTensor hx(DType::bf16, {H, N, D});
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (std::int64_t i = 0; i < hx.numel(); ++i) hx.set(i, dist(rng));
  test::DeviceTensor x(hx);
  RowsView xv{x.data(), Elem::bf16, H, N, D, N * D, D};
  HostTensor hm(DType::bf16, {H, kk, D});
  for (std::int64_t i = 0; i < hm.numel(); ++i) hm.set(i, dist(rng));
  test::DeviceTensor m(hm);
  std::int32_t *labels, *sizes, *offsets, *perm, *keys_in, *keys_out, *vals;
  float *cq, *ck, *g, *mf, *cent;
  void* temp;
  const std::size_t tb = std::max(sort_temp_bytes(H, N, kk), sort_temp_bytes(H, N, kq));
  const std::int64_t nc = std::max(tile_sort_count_items(H, N, kk), tile_sort_count_items(H, N, kq));
  std::int32_t* counts;
  cudaMalloc(&counts, 4 * nc);
  cudaMalloc(&labels, 4 * H * N), cudaMalloc(&perm, 4 * H * N), cudaMalloc(&keys_in, 4 * H * N);
  cudaMalloc(&keys_out, 4 * H * N), cudaMalloc(&vals, 4 * H * N);
  cudaMalloc(&sizes, 4 * H * kk), cudaMalloc(&offsets, 4 * H * (kk + 1)), cudaMalloc(&temp, tb);
  cudaMalloc(&cq, 4 * H * kq * D), cudaMalloc(&ck, 4 * H * kk * D), cudaMalloc(&g, 4 * std::max<std::int64_t>(H * kq * kk, project_gram_floats(H, kk, D)));
  cudaMalloc(&mf, 4 * H * kk * D), cudaMalloc(&cent, 4 * H * kk * D);
  cudaMemset(cq, 0, 4 * H * kq * D), cudaMemset(ck, 0, 4 * H * kk * D);
  SortScratch ss;
  ss.keys_in = keys_in, ss.keys_out = keys_out, ss.vals_in = vals, ss.counts = counts;
  ss.temp = temp, ss.temp_bytes = tb;
  const double flops_k = 2.0 * H * N * kk * D, flops_q = 2.0 * H * N * kq * D;
  const double a_k = median_ms([&] { launch_assign(xv, m.data(), nullptr, kk, labels, nullptr); });
  const double a_q = median_ms([&] { launch_assign(xv, m.data(), nullptr, kq, labels, nullptr); });
  // The projections (G, rownorm, G C through the Gram matrix): its two products on each path
  // (tf32x3 is the default), then the whole projection with its norm and rounding.
  double gp[2][4];
  const GemmPath paths[2] = {GemmPath::tf32x3, GemmPath::simt};
  for (int p = 0; p < 2; ++p) {
    gp[p][0] = median_ms([&] { launch_gemm_tn(H, D, D, kq, cq, cq, g, nullptr, paths[p]); });
    gp[p][1] = median_ms([&] { launch_gemm_nn(H, kk, D, D, ck, g, mf, nullptr, paths[p]); });
    gp[p][2] = median_ms([&] { launch_gemm_tn(H, D, D, kk, ck, ck, g, nullptr, paths[p]); });
    gp[p][3] = median_ms([&] { launch_gemm_nn(H, kq, D, D, cq, g, mf, nullptr, paths[p]); });
  }
  // Into their own output: m (random) stays the assignments' input.
  test::DeviceTensor m_proj(hm);
  const double proj_k = median_ms([&] { launch_project_rows(H, kk, kq, D, ck, cq, g, mf, Elem::bf16, m_proj.data(), nullptr); });
  const double proj_q = median_ms([&] { launch_project_rows(H, kq, kk, D, cq, ck, g, mf, Elem::bf16, m_proj.data(), nullptr); });
  launch_assign(xv, m.data(), nullptr, kk, labels, nullptr);
  const double up_k = median_ms([&] { launch_update_side(&xv, labels, H, N, kk, ss, sizes, offsets, perm, cent, nullptr); });
  std::int32_t* anchor_idx;
  cudaMalloc(&anchor_idx, 4 * H * (kq + kk));
  const double anchors = median_ms([&] { launch_draw_anchors(H, N, N, kq, kk, 3, anchor_idx, anchor_idx + H * kq, nullptr); });
  const double gather = median_ms([&] {
    launch_gather_centroids(xv, anchor_idx, kq, cq, nullptr);
    launch_gather_centroids(xv, anchor_idx + H * kq, kk, ck, nullptr);
  });
  cudaFree(anchor_idx);
  const double sort_t = median_ms([&] { launch_sort_labels(labels, H, N, kk, ss, sizes, offsets, perm, nullptr, SortPath::tiled); });
  const double sort_c = median_ms([&] { launch_sort_labels(labels, H, N, kk, ss, sizes, offsets, perm, nullptr, SortPath::cub); });
  launch_assign(xv, m.data(), nullptr, kq, labels, nullptr);
  const double up_q = median_ms([&] { launch_update_side(&xv, labels, H, N, kq, ss, sizes, offsets, perm, cent, nullptr); });
  const double sort_tq = median_ms([&] { launch_sort_labels(labels, H, N, kq, ss, sizes, offsets, perm, nullptr, SortPath::tiled); });
  const double sort_cq = median_ms([&] { launch_sort_labels(labels, H, N, kq, ss, sizes, offsets, perm, nullptr, SortPath::cub); });
  std::printf("breakdown %d x %lld (Kq %d, Kk %d), assign variant %s:\n", H, (long long)N, kq, kk,
              std::getenv("SVOO_ASSIGN_VARIANT") ? std::getenv("SVOO_ASSIGN_VARIANT")
                                                 : "default (4 on Hopper without a bias, else 0)");
  std::printf("  assign keys %.3f ms (%.0f TFLOP/s), assign queries %.3f ms (%.0f TFLOP/s)\n", a_k,
              flops_k / a_k / 1e9, a_q, flops_q / a_q / 1e9);
  std::printf("  projection, key side %.3f ms: Gram Cq^T Cq %.3f ms, Ck S %.3f ms; query side %.3f ms: Gram Ck^T Ck "
              "%.3f ms, Cq S %.3f ms (tf32x3, each Gram as one unsplit product; the rest is the norm and rounding)\n",
              proj_k, gp[0][0], gp[0][1], proj_q, gp[0][2], gp[0][3]);
  std::printf("  the same four products on the simt path: %.3f, %.3f, %.3f, %.3f ms\n", gp[1][0], gp[1][1], gp[1][2],
              gp[1][3]);
  std::printf("  update keys: %.3f ms; its sort + offsets: tiled %.3f ms, cub %.3f ms\n", up_k, sort_t, sort_c);
  std::printf("  update queries: %.3f ms; its sort + offsets: tiled %.3f ms, cub %.3f ms\n", up_q, sort_tq, sort_cq);
  std::printf("  draw anchors %.3f ms, gather the initial centroids %.3f ms\n", anchors, gather);
  // Every assignment variant that runs on this device, timed in this process on the same inputs,
  // with its key labels compared to variant 0's (differences should be rare near-ties).
  std::vector<std::int32_t> ref(static_cast<std::size_t>(H) * N), got(ref.size());
  for (int v = 0; v <= 4; ++v) {
    if (!assign_variant_runs(v)) continue;
    const double vk = median_ms([&] { launch_assign_variant(v, xv, m.data(), nullptr, kk, labels, nullptr); });
    const double vq = median_ms([&] { launch_assign_variant(v, xv, m.data(), nullptr, kq, labels, nullptr); });
    launch_assign_variant(v, xv, m.data(), nullptr, kk, labels, nullptr);
    cuda_ok(cudaGetLastError(), "launch_assign_variant");
    cuda_ok(cudaMemcpy((v == 0 ? ref : got).data(), labels, 4 * ref.size(), cudaMemcpyDeviceToHost), "labels");
    std::int64_t differ = 0;
    if (v != 0)
      for (std::size_t i = 0; i < ref.size(); ++i) differ += ref[i] != got[i];
    std::printf("  assign variant %d: keys %.3f ms (%.0f TFLOP/s), queries %.3f ms (%.0f TFLOP/s), key labels "
                "differing from variant 0: %lld\n",
                v, vk, flops_k / vk / 1e9, vq, flops_q / vq / 1e9, (long long)differ);
  }
  for (void* p : std::initializer_list<void*>{labels, perm, counts, keys_in, keys_out, vals, sizes, offsets, temp, cq, ck, g, mf, cent}) cudaFree(p);
}

// Random normal bf16 q and k [heads, tokens, dim] on the host.
std::pair<svoo::HostTensor, svoo::HostTensor> random_qk(int H, std::int64_t N, int D, unsigned seed) {
  svoo::HostTensor hq(svoo::DType::bf16, {H, N, D}), hk(svoo::DType::bf16, {H, N, D});
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (std::int64_t i = 0; i < hq.numel(); ++i) hq.set(i, dist(rng)), hk.set(i, dist(rng));
  return {std::move(hq), std::move(hk)};
}

// Times the parts of select() on a real clustering of random inputs: block scores (Cq Ck^T),
// their size-weighted softmax, the selection kernel, and the layout (key ranges and work list).
void select_breakdown(int H, std::int64_t N, int kq, int kk) {
  using namespace svoo;
  using namespace svoo::cuda::detail;
  const int D = 128;
  const auto [hq, hk] = random_qk(H, N, D, 3);
  test::DeviceTensor q(hq), k(hk);
  cuda::Planner plan({H, N, N, D, kq, kk});
  ClusterConfig cc;
  cc.kq = kq, cc.kk = kk;
  plan.cluster(q.view(), k.view(), cc);
  SelectionConfig sc;
  const std::vector<double> prof(static_cast<std::size_t>(H), 0.15);
  double* dprof = nullptr;
  cuda_ok(cudaMalloc(&dprof, sizeof(double) * H), "cudaMalloc");
  cuda_ok(cudaMemcpy(dprof, prof.data(), sizeof(double) * H, cudaMemcpyHostToDevice), "densities");
  const cuda::DevicePlan dp = plan.device();
  SelectParams sp;
  sp.top_p = sc.top_p, sp.floor_lo = sc.floor_lo, sp.floor_hi = sc.floor_hi, sp.theta = sc.theta;
  const double all = median_ms([&] { plan.select(sc, dprof); });
  const double gemm = median_ms([&] {
    launch_gemm_nt(H, kq, kk, D, 1.f / std::sqrt(static_cast<float>(D)), dp.q_centroids, dp.k_centroids, 0.f,
                   dp.scores, nullptr);
  });
  const double soft = median_ms([&] { launch_block_softmax(dp.scores, dp.k_sizes, H, kq, kk, nullptr); });
  plan.select(sc, dprof);  // valid scores again
  const double sel = median_ms([&] { launch_select(dp.scores, dprof, sp, H, kq, kk, dp.keep, nullptr); });
  const double from_scores = median_ms([&] { plan.select_from_scores(sc, dprof); });
  cuda_ok(cudaGetLastError(), "select breakdown");
  std::printf("select %d x %lld (Kq %d, Kk %d): whole %.3f ms = scores (Cq Ck^T) %.3f + softmax %.3f + "
              "selection %.3f + layout (ranges, work list) %.3f ms\n",
              H, (long long)N, kq, kk, all, gemm, soft, sel, from_scores - sel);
  // The layout's launches one by one, on scratch of the bench's own (the planner's is private).
  const std::int64_t rows = static_cast<std::int64_t>(H) * kq;
  std::int64_t *count = nullptr, *ptr = nullptr;
  std::int32_t *rb = nullptr, *re = nullptr, *iw = nullptr, *ir = nullptr;
  void* temp = nullptr;
  const std::size_t temp_bytes = scan64_temp_bytes(rows + 1);
  cuda_ok(cudaMalloc(&count, sizeof(std::int64_t) * (rows + 1)), "cudaMalloc");
  cuda_ok(cudaMalloc(&ptr, sizeof(std::int64_t) * (rows + 1)), "cudaMalloc");
  cuda_ok(cudaMalloc(&rb, sizeof(std::int32_t) * rows * kk), "cudaMalloc");
  cuda_ok(cudaMalloc(&re, sizeof(std::int32_t) * rows * kk), "cudaMalloc");
  cuda_ok(cudaMalloc(&iw, sizeof(std::int32_t) * dp.item_capacity), "cudaMalloc");
  cuda_ok(cudaMalloc(&ir, sizeof(std::int32_t) * dp.item_capacity), "cudaMalloc");
  cuda_ok(cudaMalloc(&temp, temp_bytes), "cudaMalloc");
  cuda_ok(cudaMemset(count, 0, sizeof(std::int64_t) * (rows + 1)), "memset");
  const double t_count = median_ms([&] { launch_count_ranges(dp.keep, dp.q_sizes, dp.k_offsets, H, kq, kk, count, nullptr); });
  const double t_scan = median_ms([&] { launch_scan64(count, rows, ptr, temp, temp_bytes, nullptr); });
  const double t_write = median_ms([&] {
    launch_write_ranges(dp.keep, dp.q_sizes, dp.k_offsets, H, kq, kk, ptr, rb, re, nullptr);
  });
  const double t_ctiles = median_ms([&] { launch_count_tiles(dp.q_sizes, H, kq, count, nullptr); });
  launch_scan64(count, rows, ptr, temp, temp_bytes, nullptr);
  const double t_wtiles = median_ms([&] { launch_write_tiles(dp.q_sizes, dp.q_offsets, H, kq, ptr, iw, ir, nullptr); });
  const double t_memset = median_ms([&] { cudaMemsetAsync(count, 0, sizeof(std::int64_t) * (rows + 1), nullptr); });
  cuda_ok(cudaGetLastError(), "layout breakdown");
  std::printf("layout parts: count ranges %.3f, scan %.3f, write ranges %.3f, count tiles %.3f, write tiles %.3f, "
              "memset %.3f ms (the layout runs 2 memsets and 2 scans)\n",
              t_count, t_scan, t_write, t_ctiles, t_wtiles, t_memset);
  for (void* p : {static_cast<void*>(count), static_cast<void*>(ptr), static_cast<void*>(rb), static_cast<void*>(re),
                  static_cast<void*>(iw), static_cast<void*>(ir), temp})
    cudaFree(p);
  cudaFree(dprof);
}

// Times the query-cluster alignment's stages (ClusterConfig::query_align) on a real co-clustering
// of random inputs, each on copies of the clustering's query side so that every timing starts
// from the same state: the projection of the final centroids, the roles, every shedding row's first
// candidate, the offers, the offered rows' whole lists, the rounds (the labels restored by a copy,
// timed alone and subtracted) and the query side's update; and every shedding row's whole list.
void align_breakdown(int H, std::int64_t N, int kq, int kk, int align) {
  using namespace svoo;
  using namespace svoo::cuda::detail;
  const int D = 128;
  const auto [hq, hk] = random_qk(H, N, D, 4);
  test::DeviceTensor q(hq), k(hk);
  RowsView qv{q.data(), Elem::bf16, H, N, D, N * D, D};
  cuda::Planner plan({H, N, N, D, kq, kk, align});
  ClusterConfig cc;
  cc.kq = kq, cc.kk = kk;
  const double plain = median_ms([&] { plan.cluster(q.view(), k.view(), cc); });
  cc.query_align = align;
  const double aligned = median_ms([&] { plan.cluster(q.view(), k.view(), cc); });
  ClusterConfig one = cc;
  one.align_passes = 1;
  const double aligned1 = median_ms([&] { plan.cluster(q.view(), k.view(), one); });
  cc.query_align = 0;
  plan.cluster(q.view(), k.view(), cc);  // the state every stage starts from
  const cuda::DevicePlan dp = plan.device();
  const std::int64_t n = static_cast<std::int64_t>(H) * N, nc = static_cast<std::int64_t>(H) * kq;
  std::int32_t *labels, *labels0, *sizes, *offsets, *perm, *rem, *offer, *shed, *keys_in, *keys_out, *vals, *counts;
  std::uint8_t* takes;
  std::int16_t *cand, *cand1, *cand_all;
  float *cost, *cost1, *cost_all, *gram, *mf, *cent;
  void *m_half, *rounds, *temp;
  const std::size_t tb = sort_temp_bytes(H, N, kq), rb = alignment_rounds_scratch_bytes(H, N, kq, align);
  const std::int64_t ncount = tile_sort_count_items(H, N, kq);
  cudaMalloc(&labels, 4 * n), cudaMalloc(&labels0, 4 * n), cudaMalloc(&perm, 4 * n);
  cudaMalloc(&keys_in, 4 * n), cudaMalloc(&keys_out, 4 * n), cudaMalloc(&vals, 4 * n);
  cudaMalloc(&counts, 4 * std::max<std::int64_t>(ncount, 1)), cudaMalloc(&temp, std::max<std::size_t>(tb, 16));
  cudaMalloc(&sizes, 4 * nc), cudaMalloc(&offsets, 4 * (nc + H)), cudaMalloc(&rem, 4 * nc);
  cudaMalloc(&offer, 4 * (nc + H)), cudaMalloc(&shed, 4 * (nc + H)), cudaMalloc(&takes, nc);
  const std::int64_t slots = alignment_offered_slots(N, kq, align);
  cudaMalloc(&cand, 2 * H * slots * kAlignE), cudaMalloc(&cost, 4 * H * slots * kAlignE), cudaMalloc(&rounds, rb);
  cudaMalloc(&cand1, 2 * n), cudaMalloc(&cost1, 4 * n), cudaMalloc(&cand_all, 2 * n * kAlignE);
  cudaMalloc(&cost_all, 4 * n * kAlignE);
  cudaMalloc(&gram, 4 * std::max(project_gram_floats(H, kq, D), project_gram_floats(H, kk, D)));
  cudaMalloc(&mf, 4 * nc * D), cudaMalloc(&m_half, 2 * nc * D), cudaMalloc(&cent, 4 * nc * D);
  cudaMemcpy(labels0, dp.q_labels, 4 * n, cudaMemcpyDeviceToDevice);
  cudaMemcpy(sizes, dp.q_sizes, 4 * nc, cudaMemcpyDeviceToDevice);
  cudaMemcpy(offsets, dp.q_offsets, 4 * (nc + H), cudaMemcpyDeviceToDevice);
  cudaMemcpy(perm, dp.q_perm, 4 * n, cudaMemcpyDeviceToDevice);
  cudaMemcpy(cent, dp.q_centroids, 4 * nc * D, cudaMemcpyDeviceToDevice);
  SortScratch ss;
  ss.keys_in = keys_in, ss.keys_out = keys_out, ss.vals_in = vals, ss.counts = ncount > 0 ? counts : nullptr;
  ss.temp = temp, ss.temp_bytes = tb;
  const double t_proj = median_ms([&] { launch_project_rows(H, kq, kk, D, cent, dp.k_centroids, gram, mf, Elem::bf16, m_half, nullptr); });
  const double t_roles = median_ms([&] { launch_alignment_roles(sizes, H, kq, align, align / 2, takes, rem, offer, shed, nullptr); });
  const double t_cand = median_ms([&] {
    launch_align_candidates(qv, m_half, nullptr, kq, takes, shed, offsets, perm, 1, cand1, cost1, 1, nullptr);
  });
  const double t_offers = median_ms([&] {
    launch_align_offers(rem, offer, offsets, perm, H, N, kq, align, cand1, cost1, 1, rounds, nullptr);
  });
  const double t_listed = median_ms([&] {
    launch_align_candidates_listed(qv, m_half, nullptr, kq, takes, labels0, static_cast<const std::int32_t*>(rounds),
                                   alignment_offered_stride(N, kq, align), alignment_offered_slots(N, kq, align),
                                   offer, cc.align_candidates, cand, cost, nullptr);
  });
  const double t_all = median_ms([&] {
    launch_align_candidates(qv, m_half, nullptr, kq, takes, shed, offsets, perm, cc.align_candidates, cand_all,
                            cost_all, kAlignE, nullptr);
  });
  launch_align_candidates(qv, m_half, nullptr, kq, takes, shed, offsets, perm, 1, cand1, cost1, 1, nullptr);
  launch_align_offers(rem, offer, offsets, perm, H, N, kq, align, cand1, cost1, 1, rounds, nullptr);
  launch_align_candidates_listed(qv, m_half, nullptr, kq, takes, labels0, static_cast<const std::int32_t*>(rounds),
                                 alignment_offered_stride(N, kq, align), alignment_offered_slots(N, kq, align), offer,
                                 cc.align_candidates, cand, cost, nullptr);
  const double t_copy = median_ms([&] { cudaMemcpyAsync(labels, labels0, 4 * n, cudaMemcpyDeviceToDevice, nullptr); });
  const double t_rounds = median_ms([&] {
    cudaMemcpyAsync(labels, labels0, 4 * n, cudaMemcpyDeviceToDevice, nullptr);
    launch_align_rounds(labels, sizes, offer, H, N, kq, align, align / 2, cc.align_candidates, cand, cost, rounds, nullptr);
  }) - t_copy;
  std::int32_t *sizes2, *offsets2, *perm2;
  cudaMalloc(&sizes2, 4 * nc), cudaMalloc(&offsets2, 4 * (nc + H)), cudaMalloc(&perm2, 4 * n);
  const double t_update = median_ms([&] { launch_update_side(&qv, labels, H, N, kq, ss, sizes2, offsets2, perm2, cent, nullptr); });
  cuda_ok(cudaGetLastError(), "alignment breakdown");
  std::printf("alignment %d x %lld (Kq %d, Kk %d, align %d, %d candidates): co-clustering T=2 %.3f ms, with the "
              "alignment %.3f ms (+%.3f; %d passes, one pass +%.3f); the first pass's stages: projection %.3f, roles %.3f, first candidates %.3f, offers %.3f, "
              "offered rows' candidates %.3f, rounds %.3f, query update %.3f ms (sum %.3f); every shedding row's "
              "whole list (the old way) %.3f ms\n",
              H, (long long)N, kq, kk, align, cc.align_candidates, plain, aligned, aligned - plain, cc.align_passes,
              aligned1 - plain, t_proj, t_roles,
              t_cand, t_offers, t_listed, t_rounds, t_update,
              t_proj + t_roles + t_cand + t_offers + t_listed + t_rounds + t_update, t_all);
  for (void* p : std::initializer_list<void*>{labels, labels0, sizes, offsets, perm, rem, offer, shed, keys_in, keys_out,
                                              vals, counts, takes, cand, cost, cand1, cost1, cand_all, cost_all, gram,
                                              mf, cent, m_half, rounds, temp,
                                              sizes2, offsets2, perm2})
    cudaFree(p);
}

int main(int argc, char** argv) {
  using namespace svoo;
  std::string json_path;
  std::vector<std::string> only;
  bool by_stage = false;
  CLI::App app{"Benchmark of the CUDA planning steps (see the file's header)", "svoo_cuda_plan_bench"};
  bench::add_shape_options(app, json_path, only);
  app.add_flag("--breakdown", by_stage, "time each stage of one iteration at Wan2.1-14B 720p, and nothing else");
  CLI11_PARSE(app, argc, argv);
  if (by_stage) {
    if (!cuda::available()) return 77;
    breakdown(40, 75600, 256, 1024);
    select_breakdown(40, 75600, 256, 1024);
    align_breakdown(40, 75600, 256, 1024, 128);
    align_breakdown(12, 32760, 256, 1024, 128);
    return 0;
  }
  if (!cuda::available()) {
    std::printf("no CUDA device\n");
    return 77;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("# %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::vector<Shape> shapes;  // largest first (as before the shapes were shared)
  for (auto w = bench::wan_shapes().rbegin(); w != bench::wan_shapes().rend(); ++w)
    shapes.push_back({w->name, w->heads, w->tokens(), 256, 1024});
  std::string json;
  std::printf("%-14s %9s %9s %9s %9s %9s %9s %9s\n", "shape", "cocl T=2", "cocl T=1", "kmeans", "select", "perm qkv",
              "unperm o", "graph");
  for (const Shape& s : shapes) {
    if (!bench::picked(only, s.name)) continue;
    const int D = 128;
    HostTensor hq(DType::bf16, {s.heads, s.tokens, D}), hk(DType::bf16, {s.heads, s.tokens, D});
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.f, 1.f);
    for (std::int64_t i = 0; i < hq.numel(); ++i) hq.set(i, dist(rng)), hk.set(i, dist(rng));
    test::DeviceTensor q(hq), k(hk), v(hk), qp(DType::bf16, {s.heads, s.tokens, D}),
        kp(DType::bf16, {s.heads, s.tokens, D}), vp(DType::bf16, {s.heads, s.tokens, D}),
        o(DType::bf16, {s.heads, s.tokens, D});
    cuda::Planner plan({s.heads, s.tokens, s.tokens, D, s.kq, s.kk});
    ClusterConfig cfg;
    cfg.kq = s.kq, cfg.kk = s.kk, cfg.iterations = 2;
    SelectionConfig sel;  // Wan defaults
    std::vector<double> prof(s.heads, 0.15);
    double* dprof = nullptr;
    cuda_ok(cudaMalloc(&dprof, sizeof(double) * s.heads), "malloc");
    cuda_ok(cudaMemcpy(dprof, prof.data(), sizeof(double) * s.heads, cudaMemcpyHostToDevice), "copy");
    const double t2 = median_ms([&] { plan.cluster(q.view(), k.view(), cfg); });
    ClusterConfig c1 = cfg;
    c1.iterations = 1;
    const double t1 = median_ms([&] { plan.cluster(q.view(), k.view(), c1); });
    ClusterConfig km = cfg;
    km.method = ClusterMethod::kmeans;
    const double tk = median_ms([&] { plan.cluster(q.view(), k.view(), km); });
    plan.cluster(q.view(), k.view(), cfg);
    const double ts = median_ms([&] { plan.select(sel, dprof); });
    const double tp = median_ms([&] {
      plan.permute(q.view(), false, qp.view());
      plan.permute(k.view(), true, kp.view());
      plan.permute(v.view(), true, vp.view());
    });
    const double tu = median_ms([&] { plan.unpermute(qp.view(), o.view()); });
    // The whole plan (clustering + selection) as one CUDA graph.
    cudaStream_t st;
    cudaStreamCreate(&st);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cuda_ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal), "capture");
    plan.cluster(q.view(), k.view(), cfg, reinterpret_cast<cuda::Stream>(st));
    plan.select(sel, dprof, reinterpret_cast<cuda::Stream>(st));
    cuda_ok(cudaStreamEndCapture(st, &graph), "end capture");
    cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    const double tg = median_ms([&] { cudaGraphLaunch(exec, st); cudaStreamSynchronize(st); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(st);
    cudaFree(dprof);
    std::printf("%-14s %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f   (ms)\n", s.name.c_str(), t2, t1, tk, ts, tp, tu, tg);
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  " {\"shape\": \"%s\", \"heads\": %d, \"tokens\": %lld, \"kq\": %d, \"kk\": %d, \"device\": \"%s\", "
                  "\"cocluster_t2_ms\": %.4f, \"cocluster_t1_ms\": %.4f, \"kmeans_t2_ms\": %.4f, \"select_ms\": %.4f, "
                  "\"permute_qkv_ms\": %.4f, \"unpermute_o_ms\": %.4f, \"plan_graph_ms\": %.4f}",
                  s.name.c_str(), s.heads, (long long)s.tokens, s.kq, s.kk, prop.name, t2, t1, tk, ts, tp, tu, tg);
    json += std::string(json.empty() ? "" : ",\n") + buf;
  }
  return svoo::bench::write_json_rows(json_path, json) ? 0 : 1;
}
