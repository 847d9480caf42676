// Standalone GPU check of the select / layout / permute / recall launchers against the CPU
// reference (block_scores_from_logits, select_row, build_layout, attention_recall). Not part of
// the CMake build (it needs a GPU to run). Build after `ninja -C build`, from the repository root (one line):
//   nvcc -std=c++20 -O2 -I include -I src -gencode=arch=compute_90a,code=sm_90a
//        tests/cuda/kernels_check.cu -o kernels_check build/libsvoo.a -lopenblas -lgomp -Xcompiler -fopenmp
// and run ./kernels_check: it prints per-check results and "ALL OK" (exit 0) or "FAILED".
// Written without a GPU at hand: compiled, never run.
#include <cuda_runtime.h>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <vector>
#include <random>
#include <algorithm>
#include <numeric>
#include "svoo/selection.hpp"
#include "svoo/measures.hpp"
#include "svoo/tensor.hpp"
#include "cuda/kernels.cuh"
using namespace svoo;
namespace D = svoo::cuda::detail;
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1);} } while (0)
template <class T> T* up(const std::vector<T>& v) { T* p; CK(cudaMalloc(&p, std::max<size_t>(1, v.size()*sizeof(T)))); CK(cudaMemcpy(p, v.data(), v.size()*sizeof(T), cudaMemcpyHostToDevice)); return p; }
template <class T> std::vector<T> down(const T* p, size_t n) { std::vector<T> v(n); CK(cudaDeviceSynchronize()); CK(cudaMemcpy(v.data(), p, n*sizeof(T), cudaMemcpyDeviceToHost)); return v; }
static int fails = 0;
#define EXPECT(c, ...) do { if (!(c)) { ++fails; printf("FAIL: "); printf(__VA_ARGS__); printf("\n"); } } while (0)
static int64_t ulpdiff(float a, float b) { int32_t x, y; memcpy(&x,&a,4); memcpy(&y,&b,4); return std::llabs((int64_t)x-(int64_t)y); }

void check_softmax_select(int heads, int kq, int kk, int mode, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, mode == 2 ? 0.2f : 3.f);
  std::vector<float> a((size_t)heads*kq*kk);
  std::vector<int32_t> ks((size_t)heads*kk);
  for (auto& x : a) x = nd(rng);
  if (mode == 1) for (auto& x : a) x = std::round(x * 2) / 2;  // many ties
  for (auto& s : ks) s = (rng() % 4 == 0) ? 0 : (int)(rng() % 50) + 1;
  std::vector<float> cpu = a;
  for (int h = 0; h < heads; ++h) block_scores_from_logits(cpu.data() + (size_t)h*kq*kk, ks.data() + (size_t)h*kk, kq, kk);
  float* da = up(a); int32_t* dks = up(ks);
  D::launch_block_softmax(da, dks, heads, kq, kk, 0); CK(cudaGetLastError());
  auto gpu = down(da, a.size());
  int64_t maxu = 0; size_t ndiff = 0;
  for (size_t t = 0; t < a.size(); ++t) { int64_t u = ulpdiff(cpu[t], gpu[t]); maxu = std::max(maxu, u); ndiff += u != 0; }
  printf("softmax heads=%d kq=%d kk=%d mode=%d: max ulp %lld, %zu of %zu differ\n", heads, kq, kk, mode, (long long)maxu, ndiff, a.size());
  EXPECT(maxu <= 4, "softmax ulp %lld", (long long)maxu);
  // selection on the CPU's scores (plus dyadic rows for exact-p ties)
  std::vector<float> sc = cpu;
  if (mode == 1) for (int i = 0; i < std::min(kq, 3); ++i) for (int j = 0; j < kk; ++j) sc[(size_t)i*kk + j] = (j % 8 == 0) ? 0.125f : 0.0f;
  float* dsc = up(sc);
  std::vector<double> prof(heads); for (int h = 0; h < heads; ++h) prof[h] = (h % 4) * 0.07;
  double* dprof = up(prof);
  uint8_t* dkeep; CK(cudaMalloc(&dkeep, sc.size())); CK(cudaMemset(dkeep, 7, sc.size()));
  for (int variant = 0; variant < 5; ++variant) {
    SelectionConfig c; D::SelectParams p;
    if (variant == 1) { c.cap = 0.3; p.cap = 0.3; }
    if (variant == 2) { c.rule = SelectionRule::paper; p.rule = 1; }
    if (variant == 3) { c.top_p = 0.5; p.top_p = 0.5; }  // hits the dyadic tie rows exactly
    if (variant == 4) { c.top_p = 1.0; p.top_p = 1.0; c.floor_lo = 0; c.floor_hi = 0; p.floor_lo = 0; p.floor_hi = 0; }
    p.floor_lo = c.floor_lo; p.floor_hi = c.floor_hi; p.top_p = c.top_p; p.theta = c.theta;
    std::vector<uint8_t> ref(sc.size());
    for (int h = 0; h < heads; ++h) for (int i = 0; i < kq; ++i) { size_t o = ((size_t)h*kq + i)*kk; select_row(sc.data()+o, kk, c, prof[h], ref.data()+o); }
    D::launch_select(dsc, dprof, p, heads, kq, kk, dkeep, 0); CK(cudaGetLastError());
    auto g = down(dkeep, sc.size());
    size_t bad = 0; for (size_t t = 0; t < g.size(); ++t) bad += g[t] != ref[t];
    printf("  select variant %d: %zu mismatching keep bytes\n", variant, bad);
    EXPECT(bad == 0, "select variant %d", variant);
  }
  cudaFree(da); cudaFree(dks); cudaFree(dsc); cudaFree(dprof); cudaFree(dkeep);
}

Clustering random_clustering(int heads, int64_t tokens, int kq, int kk, int dim, std::mt19937& rng) {
  Clustering c; c.heads = heads; c.q_tokens = c.k_tokens = tokens; c.dim = dim; c.kq = kq; c.kk = kk;
  c.q_labels.resize(heads*tokens); c.k_labels.resize(heads*tokens);
  for (auto& l : c.q_labels) l = rng() % (kq / 2 + 1) * 2 % kq;  // some empty query clusters
  for (auto& l : c.k_labels) l = (rng() % 3 == 0) ? (int)(rng() % 7) : (int)(rng() % kk);
  c.q_centroids.assign((size_t)heads*kq*dim, 0.f); c.k_centroids.assign((size_t)heads*kk*dim, 0.f);
  c.q_sizes.assign(heads*kq, 0); c.k_sizes.assign(heads*kk, 0);
  for (int h = 0; h < heads; ++h) for (int64_t n = 0; n < tokens; ++n) { c.q_sizes[h*kq + c.q_labels[h*tokens+n]]++; c.k_sizes[h*kk + c.k_labels[h*tokens+n]]++; }
  return c;
}

void check_layout(std::mt19937& rng) {
  const int heads = 3, kq = 32, kk = 300; const int64_t tokens = 700;
  Clustering c = random_clustering(heads, tokens, kq, kk, 8, rng);
  Selection s; s.heads = heads; s.kq = kq; s.kk = kk; s.keep.resize((size_t)heads*kq*kk);
  for (auto& k : s.keep) k = rng() % 3 != 0;
  BlockLayout L = build_layout(c, s);
  std::vector<int32_t> qs = c.q_sizes;
  uint8_t* dkeep = up(s.keep); int32_t* dqs = up(qs); int32_t* dko = up(L.k_offsets);
  int64_t* dcount; CK(cudaMalloc(&dcount, heads*kq*8));
  D::launch_count_ranges(dkeep, dqs, dko, heads, kq, kk, dcount, 0); CK(cudaGetLastError());
  auto cnt = down(dcount, heads*kq);
  std::vector<int64_t> ptr(heads*kq + 1, 0); for (int w = 0; w < heads*kq; ++w) ptr[w+1] = ptr[w] + cnt[w];
  EXPECT(ptr == L.range_ptr, "range_ptr differs (total gpu %lld cpu %lld)", (long long)ptr.back(), (long long)L.range_ptr.back());
  int64_t* dptr = up(ptr); int32_t *db, *de; CK(cudaMalloc(&db, ptr.back()*4 + 4)); CK(cudaMalloc(&de, ptr.back()*4 + 4));
  D::launch_write_ranges(dkeep, dqs, dko, heads, kq, kk, dptr, db, de, 0); CK(cudaGetLastError());
  auto b = down(db, ptr.back()); auto e = down(de, ptr.back());
  EXPECT(b == L.range_begin && e == L.range_end, "ranges differ");
  printf("layout: %lld ranges, %s\n", (long long)ptr.back(), (b == L.range_begin && e == L.range_end && ptr == L.range_ptr) ? "match" : "MISMATCH");
}

void check_permute(int dim, bool offset, std::mt19937& rng) {
  const int64_t heads = 3, tokens = 1000;
  const int64_t rs = dim + (offset ? 1 : 0), hs = tokens * rs;
  std::vector<uint16_t> src(heads*hs + 8), dst0(heads*hs + 8, 0xffff);
  for (auto& x : src) x = rng();
  std::vector<int32_t> perm(heads*tokens);
  for (int h = 0; h < heads; ++h) { std::iota(perm.begin()+h*tokens, perm.begin()+(h+1)*tokens, 0); std::shuffle(perm.begin()+h*tokens, perm.begin()+(h+1)*tokens, rng); }
  uint16_t* ds = up(src); int32_t* dp = up(perm);
  for (int inv = 0; inv < 2; ++inv) {
    uint16_t* dd = up(dst0);
    D::RowsView s; s.data = ds + (offset ? 1 : 0); s.heads = heads; s.tokens = tokens; s.dim = dim; s.head_stride = hs; s.row_stride = rs;
    D::MutableRowsView d; d.data = dd + (offset ? 1 : 0); d.heads = heads; d.tokens = tokens; d.dim = dim; d.head_stride = hs; d.row_stride = rs;
    D::launch_permute_rows(s, dp, inv, d, 0); CK(cudaGetLastError());
    auto out = down(dd, dst0.size());
    std::vector<uint16_t> ref = dst0; const int o = offset ? 1 : 0;
    for (int64_t h = 0; h < heads; ++h) for (int64_t r = 0; r < tokens; ++r) {
      int64_t p = perm[h*tokens + r]; int64_t from = inv ? r : p, to = inv ? p : r;
      for (int x = 0; x < dim; ++x) ref[o + h*hs + to*rs + x] = src[o + h*hs + from*rs + x];
    }
    printf("permute dim=%d offset=%d inverse=%d: %s\n", dim, offset, inv, out == ref ? "match" : "MISMATCH");
    EXPECT(out == ref, "permute");
    cudaFree(dd);
  }
}

void check_recall(std::mt19937& rng, int64_t nsample) {
  const int heads = 3, kq = 16, kk = 64, dim = 128; const int64_t tokens = 3000;
  Clustering c = random_clustering(heads, tokens, kq, kk, dim, rng);
  std::vector<uint16_t> q(heads*tokens*dim), k(heads*tokens*dim);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& x : q) x = float_to_bf16(nd(rng) * 1.5f); for (auto& x : k) x = float_to_bf16(nd(rng));
  Selection s; s.heads = heads; s.kq = kq; s.kk = kk; s.keep.resize((size_t)heads*kq*kk);
  for (auto& x : s.keep) x = rng() % 4 == 0;
  TensorView qv = TensorView::contiguous(q.data(), DType::bf16, {heads, tokens, dim});
  TensorView kv = TensorView::contiguous(k.data(), DType::bf16, {heads, tokens, dim});
  RowSample rs; rs.rows = nsample; rs.seed = 5;
  auto ref = attention_recall(qv, kv, c, s, rs);
  auto rows = sample_rows(tokens, rs);
  uint16_t* dq = up(q); uint16_t* dk = up(k); int32_t* dlq = up(c.q_labels); int32_t* dlk = up(c.k_labels); uint8_t* dkeep = up(s.keep); int64_t* drows = up(rows);
  double* drec; CK(cudaMalloc(&drec, heads*8));
  D::RowsView Q; Q.data = dq; Q.heads = heads; Q.tokens = tokens; Q.dim = dim; Q.head_stride = tokens*dim; Q.row_stride = dim;
  D::RowsView K = Q; K.data = dk;
  D::launch_recall(Q, K, dlq, dlk, dkeep, kq, kk, drows, (int)rows.size(), drec, 0); CK(cudaGetLastError());
  auto g = down(drec, heads);
  for (int h = 0; h < heads; ++h) { printf("recall h%d (%zu rows): cpu %.12f gpu %.12f diff %.2e\n", h, rows.size(), ref[h], g[h], g[h]-ref[h]); EXPECT(std::fabs(g[h]-ref[h]) < 1e-6, "recall"); }
}

int main() {
  std::mt19937 rng(1234);
  for (int kk : {1, 2, 5, 1000, 1024, 4096}) for (int mode = 0; mode < 3; ++mode) check_softmax_select(3, kk == 4096 ? 40 : 64, kk, mode, rng);
  check_layout(rng);
  check_permute(128, false, rng); check_permute(100, false, rng); check_permute(128, true, rng); check_permute(64, false, rng);
  check_recall(rng, 0); check_recall(rng, 257);
  printf("%s (%d failures)\n", fails ? "FAILED" : "ALL OK", fails);
  return fails != 0;
}
