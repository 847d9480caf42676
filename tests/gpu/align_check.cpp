// GPU check of the query-cluster alignment (part of svoo_gpu_check): launch_align_candidates
// against a double-precision reference (a differing candidate must be a near-tie of the
// reference's), launch_align_rounds against svoo::align_clusters on the same lists (exactly), and
// the planner's whole alignment against cpu::align_queries on the planner's own clustering.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../src/cuda/kernels.cuh"
#include "check_report.hpp"
#include "device_buffer.hpp"
#include "svoo/cpu.hpp"
#include "svoo/cuda.hpp"
#include "svoo/error.hpp"

namespace svoo {
namespace {

using cuda::detail::kAlignE;
using test::DeviceBuffer;
using test::DeviceTensor;

int g_fail = 0;
#define ACHECK(cond, ...) SVOO_GPU_CHECK(g_fail, cond, __VA_ARGS__)

// Milliseconds of one call of fn on the default stream (after a warm-up call).
template <class F>
float time_ms(F&& fn) {
  fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  cudaEventRecord(a);
  fn();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a), cudaEventDestroy(b);
  return ms;
}

cuda::detail::RowsView rows_view(const DeviceTensor& t, DType dtype, int heads, std::int64_t tokens) {
  cuda::detail::RowsView v;
  v.data = t.data();
  v.elem = dtype == DType::bf16 ? cuda::detail::Elem::bf16 : cuda::detail::Elem::f16;
  v.heads = heads, v.tokens = tokens, v.dim = 128, v.head_stride = tokens * 128, v.row_stride = 128;
  return v;
}

// launch_align_candidates against scores in double from the same rounded inputs.
void check_candidates(int heads, std::int64_t tokens, int clusters, DType dtype, bool bias, int e, std::uint32_t seed) {
  const int D = 128;
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  HostTensor hx(dtype, {heads, tokens, D}), hm(dtype, {heads, clusters, D});
  for (std::int64_t i = 0; i < hx.numel(); ++i) hx.set(i, dist(rng));
  for (std::int64_t i = 0; i < hm.numel(); ++i) hm.set(i, dist(rng));
  std::vector<float> hb(static_cast<std::size_t>(heads) * clusters);
  for (float& b : hb) b = bias ? 3.0f * dist(rng) : 0.0f;
  std::vector<std::int32_t> labels(static_cast<std::size_t>(heads) * tokens), rem(hb.size());
  std::vector<std::uint8_t> takes(hb.size());
  for (auto& l : labels) l = static_cast<std::int32_t>(rng() % clusters);
  for (std::size_t j = 0; j < takes.size(); ++j) {
    takes[j] = rng() % 2;
    rem[j] = takes[j] ? 0 : static_cast<std::int32_t>(rng() % 3);  // a third of the rest do not shed
  }
  // The clustering's offsets and permutation (stable by label), and the shedding rows' compact
  // starts (the exclusive scan of the shedding clusters' sizes).
  std::vector<std::int32_t> offsets(static_cast<std::size_t>(heads) * (clusters + 1), 0), perm(labels.size()),
      shed_base(offsets.size(), 0);
  for (int h = 0; h < heads; ++h) {
    std::vector<std::int32_t> size(clusters, 0);
    for (std::int64_t n = 0; n < tokens; ++n) ++size[labels[h * tokens + n]];
    std::int32_t* off = offsets.data() + h * (clusters + 1);
    std::int32_t* sb = shed_base.data() + h * (clusters + 1);
    for (int j = 0; j < clusters; ++j)
      off[j + 1] = off[j] + size[j], sb[j + 1] = sb[j] + (rem[h * clusters + j] > 0 ? size[j] : 0);
    std::vector<std::int32_t> fill(off, off + clusters);
    for (std::int64_t n = 0; n < tokens; ++n) perm[h * tokens + fill[labels[h * tokens + n]]++] = static_cast<std::int32_t>(n);
  }
  DeviceTensor dx(hx), dm(hm);
  DeviceBuffer<float> db(hb);
  DeviceBuffer<std::int32_t> doff(offsets), dp(perm), dsb(shed_base);
  DeviceBuffer<std::uint8_t> dt(takes);
  const std::size_t lists = static_cast<std::size_t>(heads) * tokens * kAlignE;
  std::vector<std::int16_t> poison_c(lists, 12345);
  DeviceBuffer<std::int16_t> dc(poison_c);
  DeviceBuffer<float> dk(lists);
  const float ms = time_ms([&] {
    cuda::detail::launch_align_candidates(rows_view(dx, dtype, heads, tokens), dm.data(), bias ? db.data() : nullptr,
                                          clusters, dt.data(), dsb.data(), doff.data(), dp.data(), e, dc.data(),
                                          dk.data(), kAlignE, nullptr);
  });
  test::cuda_ok(cudaDeviceSynchronize(), "align candidates");
  const auto gc = dc.download();
  const auto gk = dk.download();
  std::int64_t rows = 0, near_ties = 0, bad = 0;
  std::vector<double> score(clusters), mag(clusters);
  std::vector<int> order;
  for (int h = 0; h < heads; ++h)
    for (std::int64_t n = 0; n < tokens; ++n) {
      const std::size_t at = (static_cast<std::size_t>(h) * tokens + n) * kAlignE;
      const int own = labels[h * tokens + n];
      if (rem[h * clusters + own] == 0) {  // untouched
        for (int q = 0; q < kAlignE; ++q) bad += gc[at + q] != 12345;
        continue;
      }
      ++rows;
      order.clear();
      double tol = 0;
      for (int j = 0; j < clusters; ++j) {
        double s = 0, a = 0;
        for (int d = 0; d < D; ++d) {
          const double xv = hx.get((h * tokens + n) * D + d), mv = hm.get((static_cast<std::int64_t>(h) * clusters + j) * D + d);
          s += xv * mv, a += std::fabs(xv * mv);
        }
        score[j] = s + hb[h * clusters + j];
        mag[j] = a;
        tol = std::max(tol, 4e-5 * a + 1e-6);
        if (takes[h * clusters + j]) order.push_back(j);
      }
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
      for (int q = 0; q < kAlignE; ++q) {
        const int want = q < e && q < static_cast<int>(order.size()) ? order[q] : -1;
        const int got = gc[at + q];
        if (got == want) {
          if (got >= 0 && std::fabs(gk[at + q] - (score[own] - score[got])) > 2 * tol) ++bad;
          continue;
        }
        // A different candidate is fine only where the reference's scores tie within rounding.
        if (want < 0 || got < 0 || got >= clusters || !takes[h * clusters + got] ||
            std::fabs(score[got] - score[want]) > 2 * tol) {
          if (bad < 5) std::printf("    row (%d, %lld) slot %d: got %d, want %d\n", h, (long long)n, q, got, want);
          ++bad;
        } else {
          ++near_ties;
        }
      }
    }
  std::printf("  candidates %d x %lld, %d clusters, %s%s, e %d: %lld shedding rows, %lld near-tie swaps (%.3f ms)\n",
              heads, (long long)tokens, clusters, dtype_name(dtype), bias ? " + bias" : "", e, (long long)rows,
              (long long)near_ties, ms);
  ACHECK(bad == 0, "%lld candidate entries wrong", (long long)bad);
  ACHECK(rows > 0, "no shedding rows: the case checks nothing");

  // The planner's cheap pass (e = 1 on every shedding row, into [heads, tokens] arrays) and its
  // listed pass (every third shedding row, -1 gaps between them, written by list slot) against the
  // lists above, bit for bit: entry 0 of the first, entries 0..e-1 of the second, nothing else
  // written.
  const auto rx = rows_view(dx, dtype, heads, tokens);
  const std::size_t firsts = static_cast<std::size_t>(heads) * tokens;
  DeviceBuffer<std::int16_t> dc1(std::vector<std::int16_t>(firsts, 12345)), dcl(poison_c);
  DeviceBuffer<float> dk1(std::vector<float>(firsts, -7.0f)), dkl(std::vector<float>(lists, -7.0f));
  cuda::detail::launch_align_candidates(rx, dm.data(), bias ? db.data() : nullptr, clusters, dt.data(), dsb.data(),
                                        doff.data(), dp.data(), 1, dc1.data(), dk1.data(), 1, nullptr);
  const std::int64_t slots = tokens;
  std::vector<std::int32_t> list(static_cast<std::size_t>(heads) * slots, -1), counts(offsets.size(), 0);
  for (int h = 0; h < heads; ++h) {
    std::int64_t at = 0, seen = 0;
    for (std::int64_t n = 0; n < tokens; ++n) {
      if (rem[h * clusters + labels[h * tokens + n]] == 0 || seen++ % 3 != 0) continue;
      if (at < slots) list[h * slots + at] = static_cast<std::int32_t>(n);
      at += 2;  // a -1 gap after each
    }
    counts[h * (clusters + 1) + clusters] = static_cast<std::int32_t>(std::min(at, slots));
  }
  DeviceBuffer<std::int32_t> dlist(list), dcounts(counts), dlab(labels);
  const float ms_listed = time_ms([&] {
    cuda::detail::launch_align_candidates_listed(rx, dm.data(), bias ? db.data() : nullptr, clusters, dt.data(),
                                                 dlab.data(), dlist.data(), slots, slots, dcounts.data(), e, dcl.data(),
                                                 dkl.data(), nullptr);
  });
  test::cuda_ok(cudaDeviceSynchronize(), "align candidates (first, listed)");
  const auto c1 = dc1.download(), cl = dcl.download();
  const auto k1 = dk1.download(), kl = dkl.download();
  std::int64_t bad1 = 0, badl = 0, nlisted = 0;
  for (int h = 0; h < heads; ++h)
    for (std::int64_t n = 0; n < tokens; ++n) {
      const std::size_t at = (static_cast<std::size_t>(h) * tokens + n) * kAlignE, f = h * tokens + n;
      const bool sheds = rem[h * clusters + labels[h * tokens + n]] != 0;
      bad1 += sheds ? (c1[f] != gc[at] || std::memcmp(&k1[f], &gk[at], 4) != 0) : (c1[f] != 12345);
      const std::int32_t token = list[h * slots + n];  // slot n of head h
      const std::size_t sl = (static_cast<std::size_t>(h) * slots + n) * kAlignE;
      const bool in = n < counts[h * (clusters + 1) + clusters] && token >= 0;
      const std::size_t ref = (static_cast<std::size_t>(h) * tokens + (in ? token : 0)) * kAlignE;
      for (int q = 0; q < kAlignE; ++q)
        badl += in ? (cl[sl + q] != gc[ref + q] || std::memcmp(&kl[sl + q], &gk[ref + q], 4) != 0)
                   : (cl[sl + q] != 12345);
      nlisted += in;
    }
  std::printf("    first candidates: %lld entries differ; %lld listed rows: %lld entries differ (%.3f ms)\n",
              (long long)bad1, (long long)nlisted, (long long)badl, ms_listed);
  ACHECK(bad1 == 0, "e = 1 differs from entry 0 of the full lists (or wrote elsewhere) on %lld rows", (long long)bad1);
  ACHECK(badl == 0 && nlisted > 0, "the listed pass differs from the full lists on %lld entries (%lld rows listed)",
         (long long)badl, (long long)nlisted);
}

// launch_align_rounds against align_clusters on the same random lists (ties in the costs included).
void check_rounds(int heads, std::int64_t tokens, int clusters, int align, int e, std::uint32_t seed,
                  bool expect_moves = true, int take_above = 0) {
  if (take_above == 0) take_above = align / 2;
  std::mt19937 rng(seed);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(heads) * tokens);
  std::vector<std::int32_t> sizes(static_cast<std::size_t>(heads) * clusters, 0), offsets, perm(labels.size());
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int h = 0; h < heads; ++h)
    for (std::int64_t n = 0; n < tokens; ++n) {
      const int l = static_cast<int>(std::pow(u(rng), 1.7) * clusters);  // uneven sizes
      labels[h * tokens + n] = l;
      ++sizes[h * clusters + l];
    }
  offsets.assign(static_cast<std::size_t>(heads) * (clusters + 1), 0);
  for (int h = 0; h < heads; ++h) {
    for (int j = 0; j < clusters; ++j) offsets[h * (clusters + 1) + j + 1] = offsets[h * (clusters + 1) + j] + sizes[h * clusters + j];
    std::vector<std::int32_t> fill(offsets.begin() + h * (clusters + 1), offsets.begin() + h * (clusters + 1) + clusters);
    for (std::int64_t n = 0; n < tokens; ++n) perm[h * tokens + fill[labels[h * tokens + n]]++] = static_cast<std::int32_t>(n);
  }
  // Lists: random distinct taking clusters, some short or empty; costs on a coarse grid (ties).
  std::vector<std::int16_t> cand(labels.size() * kAlignE, -1);
  std::vector<float> cost(cand.size(), 0.0f);
  for (int h = 0; h < heads; ++h) {
    std::vector<std::int32_t> h_sizes(sizes.begin() + h * clusters, sizes.begin() + (h + 1) * clusters);
    const auto takes = alignment_takers(h_sizes, align, take_above);
    std::vector<int> takers;
    for (int j = 0; j < clusters; ++j)
      if (takes[j]) takers.push_back(j);
    for (std::int64_t n = 0; n < tokens; ++n) {
      const std::size_t at = (static_cast<std::size_t>(h) * tokens + n) * kAlignE;
      const int len = std::min<int>(static_cast<int>(takers.size()), static_cast<int>(rng() % (e + 2)));
      std::vector<int> pick = takers;
      std::shuffle(pick.begin(), pick.end(), rng);
      float c = 0.25f * static_cast<float>(rng() % 8);
      for (int q = 0; q < std::min(len, e); ++q) {
        cand[at + q] = static_cast<std::int16_t>(pick[q]);
        cost[at + q] = c;
        c += 0.25f * static_cast<float>(rng() % 3);  // non-decreasing, ties included
      }
    }
  }
  DeviceBuffer<std::int32_t> dl(labels), ds(sizes), doff(offsets), dp(perm);
  DeviceBuffer<std::int16_t> dc(cand);
  DeviceBuffer<float> dk(cost);
  DeviceBuffer<std::uint8_t> takes(sizes.size());
  DeviceBuffer<std::int32_t> rem(sizes.size()), base(static_cast<std::size_t>(heads) * (clusters + 1)),
      shed(static_cast<std::size_t>(heads) * (clusters + 1));
  DeviceBuffer<char> scratch(cuda::detail::alignment_rounds_scratch_bytes(heads, tokens, clusters, align));
  cuda::detail::launch_alignment_roles(ds.data(), heads, clusters, align, take_above, takes.data(), rem.data(), base.data(),
                                       shed.data(), nullptr);
  cuda::detail::launch_align_offers(rem.data(), base.data(), doff.data(), dp.data(), heads, tokens, clusters, align,
                                    dc.data(), dk.data(), kAlignE, scratch.data(), nullptr);
  test::cuda_ok(cudaDeviceSynchronize(), "align offers");
  // The offered rows' lists by list slot (what launch_align_candidates_listed writes for them).
  const std::int64_t stride = cuda::detail::alignment_offered_stride(tokens, clusters, align),
                     slots = cuda::detail::alignment_offered_slots(tokens, clusters, align);
  const auto scratch_host = scratch.download();
  const auto offer_base = base.download();
  std::vector<std::int16_t> slot_cand(static_cast<std::size_t>(heads) * slots * kAlignE, -1);
  std::vector<float> slot_cost(slot_cand.size(), 0.0f);
  for (int h = 0; h < heads; ++h) {
    const std::int32_t n = offer_base[h * (clusters + 1) + clusters];
    for (std::int32_t d = 0; d < n; ++d) {
      std::int32_t token;
      std::memcpy(&token, scratch_host.data() + 4 * (h * stride + d), 4);
      if (token < 0) continue;
      for (int q = 0; q < kAlignE; ++q)
        slot_cand[(h * slots + d) * kAlignE + q] = cand[(h * tokens + token) * kAlignE + q],
        slot_cost[(h * slots + d) * kAlignE + q] = cost[(h * tokens + token) * kAlignE + q];
    }
  }
  DeviceBuffer<std::int16_t> dsc(slot_cand);
  DeviceBuffer<float> dsk(slot_cost);
  cuda::detail::launch_align_rounds(dl.data(), ds.data(), base.data(), heads, tokens, clusters, align, take_above, e, dsc.data(),
                                    dsk.data(), scratch.data(), nullptr);
  test::cuda_ok(cudaDeviceSynchronize(), "align rounds");
  const auto got = dl.download();
  // Timing only: the same rounds again on a copy of the labels.
  DeviceBuffer<std::int32_t> dl2(labels);
  const float ms = time_ms([&] {
    cuda::detail::launch_alignment_roles(ds.data(), heads, clusters, align, take_above, takes.data(), rem.data(), base.data(),
                                         shed.data(), nullptr);
    cuda::detail::launch_align_offers(rem.data(), base.data(), doff.data(), dp.data(), heads, tokens, clusters, align,
                                      dc.data(), dk.data(), kAlignE, scratch.data(), nullptr);
    cuda::detail::launch_align_rounds(dl2.data(), ds.data(), base.data(), heads, tokens, clusters, align, take_above, e, dsc.data(),
                                      dsk.data(), scratch.data(), nullptr);
  });
  test::cuda_ok(cudaDeviceSynchronize(), "align rounds (timed)");
  std::int64_t moved = 0, differ = 0;
  for (int h = 0; h < heads; ++h) {
    std::vector<std::int32_t> ref(labels.begin() + h * tokens, labels.begin() + (h + 1) * tokens);
    std::vector<std::int32_t> c32(static_cast<std::size_t>(tokens) * e);
    std::vector<float> k32(c32.size());
    for (std::int64_t n = 0; n < tokens; ++n)
      for (int q = 0; q < e; ++q)
        c32[n * e + q] = cand[(h * tokens + n) * kAlignE + q], k32[n * e + q] = cost[(h * tokens + n) * kAlignE + q];
    moved += align_clusters(ref, clusters, align, e, c32, k32, take_above);
    for (std::int64_t n = 0; n < tokens; ++n) differ += ref[n] != got[h * tokens + n];
  }
  std::printf("  rounds %d x %lld, %d clusters, align %d (taking above %d), e %d: %lld rows moved, %lld labels differ "
              "from the CPU's (%.3f ms)\n",
              heads, (long long)tokens, clusters, align, take_above, e, (long long)moved, (long long)differ, ms);
  ACHECK(differ == 0, "the rounds differ from align_clusters on %lld rows", (long long)differ);
  ACHECK(moved > 0 || !expect_moves, "nothing moved: the case checks nothing");
}

// The planner's alignment against cpu::align_queries applied to the planner's own clustering.
void check_planner(int heads, std::int64_t tokens, int kq, int kk, int align, ClusterMethod method, DType dtype,
                   std::uint32_t seed, int passes = ClusterConfig{}.align_passes) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  HostTensor hq(dtype, {heads, tokens, 128}), hk(dtype, {heads, tokens, 128});
  for (std::int64_t i = 0; i < hq.numel(); ++i) hq.set(i, dist(rng)), hk.set(i, dist(rng));
  DeviceTensor q(hq), k(hk);
  cuda::Planner plan({heads, tokens, tokens, 128, kq, kk, align});
  ClusterConfig cfg;
  cfg.kq = kq, cfg.kk = kk, cfg.seed = seed, cfg.method = method, cfg.align_passes = passes;
  const float plain_ms = time_ms([&] { plan.cluster(q.view(), k.view(), cfg); });
  Clustering ref = plan.download_clustering();
  cpu::align_queries(hq.view(), ref, align, cfg.align_candidates, method, cfg.align_passes);
  cfg.query_align = align;
  const float aligned_ms = time_ms([&] { plan.cluster(q.view(), k.view(), cfg); });
  const Clustering got = plan.download_clustering();
  bool consistent = true;
  try {
    check_clustering(got);
  } catch (const Error& e) {
    consistent = false;
    std::printf("    %s\n", e.what());
  }
  std::int64_t differ = 0;
  for (std::size_t i = 0; i < got.q_labels.size(); ++i) differ += got.q_labels[i] != ref.q_labels[i];
  const double n = static_cast<double>(got.q_labels.size());
  const double empty_got = empty_chunk_rows(got.q_sizes, align) / n, empty_ref = empty_chunk_rows(ref.q_sizes, align) / n;
  std::printf("  planner %d x %lld, Kq/Kk %d/%d, align %d (%d passes), %s, %s: empty rows %.2f %% (CPU %.2f %%), labels differ from "
              "the CPU's on %.3f %% of the rows; clustering %.2f ms, aligned %.2f ms\n",
              heads, (long long)tokens, kq, kk, align, passes, cluster_method_name(method), dtype_name(dtype), 100 * empty_got,
              100 * empty_ref, 100.0 * differ / n, plain_ms, aligned_ms);
  ACHECK(consistent, "the aligned clustering's sizes, offsets or centroids do not fit its labels");
  // The CPU's scores round differently (fp32 sums in another order, its own projected
  // centroids): near-ties may send a row elsewhere and shift a cluster's whole shed, no more.
  ACHECK(differ <= 0.01 * n, "labels differ from the CPU's alignment on %lld of %.0f rows", (long long)differ, n);
  ACHECK(std::fabs(empty_got - empty_ref) <= 0.01, "empty rows %.4f against the CPU's %.4f", empty_got, empty_ref);
  // The keys are untouched; a plan without reserved scratch refuses to align.
  cuda::Planner small({heads, tokens, tokens, 128, kq, kk});
  bool refused = false;
  try {
    small.cluster(q.view(), k.view(), cfg);
  } catch (const Error&) {
    refused = true;
  }
  ACHECK(refused, "a plan shape without query_align accepted an aligned clustering");
}

}  // namespace

int check_alignment(bool quick) {
  std::printf("query-cluster alignment\n");
  check_candidates(2, 3000, 100, DType::bf16, false, 8, 1);
  check_candidates(1, 1000, 256, DType::f16, true, 5, 2);
  check_rounds(3, 20000, 300, 64, 8, 3);
  check_rounds(2, 5000, 40, 128, 3, 4);
  check_rounds(1, 3000, 500, 16, 8, 5);
  check_rounds(2, 20000, 3, 64, 8, 11, false);  // clusters of more than 4096 listed rows (the slow path)
  check_rounds(3, 20000, 300, 64, 8, 12, true, alignment_take_above(64, 4));  // later passes' bars
  check_rounds(2, 5000, 40, 128, 3, 13, true, alignment_take_above(128, 2));
  check_planner(2, 12000, 64, 256, 128, ClusterMethod::coclustering, DType::bf16, 6);
  check_planner(2, 12000, 64, 256, 128, ClusterMethod::coclustering, DType::bf16, 6, 1);
  if (!quick) {
    check_candidates(3, 20000, 1000, DType::bf16, true, 8, 7);
    check_rounds(40, 75600, 256, 128, 8, 8);
    check_planner(3, 30000, 128, 512, 64, ClusterMethod::kmeans, DType::f16, 9);
    check_planner(12, 75600, 256, 1024, 128, ClusterMethod::coclustering, DType::bf16, 10);
    check_planner(12, 32760, 256, 1024, 128, ClusterMethod::coclustering, DType::bf16, 14);  // 480p
  }
  return g_fail;
}

}  // namespace svoo
