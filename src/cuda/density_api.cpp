// The public entry of the device tau-density: argument checks, the workspace, and a host
// convenience that uploads, runs and downloads (see svoo/cuda.hpp and density.cu).
#include <cuda_runtime.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "density_kernels.cuh"
#include "device_info.hpp"
#include "device_views.hpp"
#include "density_math.hpp"
#include "svoo/cuda.hpp"
#include "svoo/error.hpp"

namespace svoo::cuda {
namespace {

using detail::Elem;
using detail::RowsView;

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorKind::unsupported, std::string(what) + ": " + cudaGetErrorString(e));
}

RowsView rows_view(const TensorView& t, const char* name) {
  return detail::device_rows(t, std::string("cuda::tau_density: ") + name);
}

struct Layout {
  std::size_t row_ref, row_peak;                              // pass 1's reference and row max
  std::size_t row_above, row_total, row_error, row_count_above;  // pass 1's walk (fp64 masses)
  std::size_t bstar, fb_lo, fb_hi, counts, lo, hi, fallback;
  std::size_t win_lo, win_hi;                                 // the Hopper search's windows
  std::size_t row_b_hi, row_b_lo;                             // its pass 1's masses at the coarse ends
  std::size_t list, list_head, list_items, head_count, head_item0;  // its later rounds' rows
  std::size_t nonfinite;                                      // one int: the inputs' check
  std::size_t total;
};
Layout layout(std::int64_t heads, std::int64_t nrows) {
  const auto n = static_cast<std::size_t>(heads * nrows);
  Layout l{};
  std::size_t off = 0;
  auto take = [&](std::size_t bytes) {
    const std::size_t at = off;
    off = (off + bytes + 255) / 256 * 256;
    return at;
  };
  l.row_ref = take(4 * n), l.row_peak = take(4 * n);
  l.row_above = take(8 * n), l.row_total = take(8 * n), l.row_error = take(8 * n), l.row_count_above = take(4 * n);
  l.bstar = take(4 * n), l.fb_lo = take(4 * n), l.fb_hi = take(4 * n);
  l.counts = take(4 * n), l.lo = take(4 * n), l.hi = take(4 * n);
  l.fallback = take(n);
  l.win_lo = take(4 * n), l.win_hi = take(4 * n);
  l.row_b_hi = take(8 * n), l.row_b_lo = take(8 * n);
  // At most every row again: per head its rows padded to whole items of 128.
  const auto items = static_cast<std::size_t>(heads * ((nrows + 127) / 128));
  l.list = take(4 * 128 * items), l.list_head = take(4 * items), l.list_items = take(4);
  l.head_count = take(4 * static_cast<std::size_t>(heads)), l.head_item0 = take(4 * static_cast<std::size_t>(heads));
  l.nonfinite = take(4);
  l.total = off;
  return l;
}

// A device allocation freed on scope exit.
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(std::size_t bytes) { ok(cudaMalloc(&p, bytes ? bytes : 16), "cuda::tau_density: cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

std::size_t tau_density_workspace_bytes(std::int64_t heads, std::int64_t nrows) {
  require(heads >= 0 && nrows >= 0, ErrorKind::invalid_argument, "cuda::tau_density_workspace_bytes: negative size");
  return layout(heads, nrows).total;
}

void tau_density(const TensorView& q, const TensorView& k, double tau, const std::int64_t* rows, std::int64_t nrows,
                 void* workspace, std::size_t workspace_bytes, const DensityOutputs& out, Stream stream) {
  require(tau > 0.0 && tau <= 1.0, ErrorKind::invalid_argument,
          "cuda::tau_density: tau must be in (0, 1], got " + std::to_string(tau));
  const RowsView qv = rows_view(q, "q"), kv = rows_view(k, "k");
  require(qv.elem == kv.elem, ErrorKind::dtype, "cuda::tau_density: q and k must share one dtype, got " +
                                                    q.describe() + " and " + k.describe());
  require(qv.heads == kv.heads, ErrorKind::shape,
          "cuda::tau_density: q and k must have the same heads, got " + q.describe() + " and " + k.describe());
  require(kv.tokens >= 1, ErrorKind::shape, "cuda::tau_density: k has no tokens");
  require(qv.heads <= 65535, ErrorKind::unsupported, "cuda::tau_density: at most 65535 heads");
  require(nrows >= 0, ErrorKind::invalid_argument, "cuda::tau_density: nrows must be >= 0");
  if (rows == nullptr)
    require(nrows == qv.tokens, ErrorKind::invalid_argument,
            "cuda::tau_density: without a row list nrows must equal q's tokens (" + std::to_string(qv.tokens) +
                "), got " + std::to_string(nrows));
  require(qv.heads * std::max<std::int64_t>(nrows, 1) < (std::int64_t{1} << 31) && kv.tokens < (std::int64_t{1} << 31),
          ErrorKind::unsupported, "cuda::tau_density: heads x rows and k tokens must stay below 2^31");
  // The Hopper passes count their steps (128 rows x 128 keys) in 32-bit integers.
  require((qv.heads * ((nrows + 127) / 128)) * ((kv.tokens + 127) / 128) < (std::int64_t{1} << 31),
          ErrorKind::unsupported,
          "cuda::tau_density: heads x rows x k tokens is beyond 2^45 score pairs a call; sample rows or split the heads");
  require(out.density != nullptr, ErrorKind::invalid_argument, "cuda::tau_density: out.density is null");
  const Layout l = layout(qv.heads, nrows);
  require(workspace != nullptr && workspace_bytes >= l.total, ErrorKind::invalid_argument,
          "cuda::tau_density: the workspace needs " + std::to_string(l.total) + " bytes, got " +
              std::to_string(workspace_bytes));
  require(reinterpret_cast<std::uintptr_t>(workspace) % 256 == 0, ErrorKind::invalid_argument,
          "cuda::tau_density: the workspace must be 256-byte aligned");
  auto* base = static_cast<char*>(workspace);
  detail::DensityArgs a;
  a.q = qv, a.k = kv, a.rows = rows, a.nrows = nrows, a.tau = tau;
  a.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(qv.dim)));
  a.fixed_scale = detail::density::fixed_scale(kv.tokens);
  a.row_ref = reinterpret_cast<float*>(base + l.row_ref);
  a.row_peak = reinterpret_cast<float*>(base + l.row_peak);
  a.row_above = reinterpret_cast<double*>(base + l.row_above);
  a.row_total = reinterpret_cast<double*>(base + l.row_total);
  a.row_error = reinterpret_cast<double*>(base + l.row_error);
  a.row_count_above = reinterpret_cast<std::int32_t*>(base + l.row_count_above);
  a.drop = detail::density::exact_drop(kv.tokens);
  a.bstar = reinterpret_cast<std::int32_t*>(base + l.bstar);
  a.fb_lo = reinterpret_cast<std::int32_t*>(base + l.fb_lo);
  a.fb_hi = reinterpret_cast<std::int32_t*>(base + l.fb_hi);
  a.counts = out.counts ? out.counts : reinterpret_cast<std::int32_t*>(base + l.counts);
  a.count_lo = out.count_lo ? out.count_lo : reinterpret_cast<std::int32_t*>(base + l.lo);
  a.count_hi = out.count_hi ? out.count_hi : reinterpret_cast<std::int32_t*>(base + l.hi);
  a.fallback = reinterpret_cast<std::uint8_t*>(base + l.fallback);
  a.win_lo = reinterpret_cast<float*>(base + l.win_lo);
  a.win_hi = reinterpret_cast<float*>(base + l.win_hi);
  a.row_b_hi = reinterpret_cast<double*>(base + l.row_b_hi);
  a.row_b_lo = reinterpret_cast<double*>(base + l.row_b_lo);
  a.list_out = reinterpret_cast<std::int32_t*>(base + l.list);
  a.list_head_out = reinterpret_cast<std::int32_t*>(base + l.list_head);
  a.list_items_out = reinterpret_cast<std::int32_t*>(base + l.list_items);
  a.head_count = reinterpret_cast<std::int32_t*>(base + l.head_count);
  a.head_item0 = reinterpret_cast<std::int32_t*>(base + l.head_item0);
  a.nonfinite = reinterpret_cast<std::int32_t*>(base + l.nonfinite);
  a.span = tau < 1.0 ? static_cast<float>(std::log2(static_cast<double>(kv.tokens) / (1.0 - tau))) : 0.f;
  detail::require_supported_device("cuda::tau_density");
  detail::launch_tau_density(a, out.density, out.bound, out.fallbacks, reinterpret_cast<cudaStream_t>(stream));
  ok(cudaGetLastError(), "cuda::tau_density");
}

DensityResult tau_density(const TensorView& q, const TensorView& k, double tau, const RowSample& sample,
                          Stream stream) {
  require(q.rank == 3 && k.rank == 3, ErrorKind::shape,
          "cuda::tau_density: q and k must be [heads, tokens, head_dim], got " + q.describe() + " and " + k.describe());
  require(q.device == k.device, ErrorKind::device, "cuda::tau_density: q and k must be on one device");
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  DensityResult r;
  r.rows = sample_rows(q.shape[1], sample);
  const std::int64_t H = q.shape[0], nrows = static_cast<std::int64_t>(r.rows.size());
  const bool all = nrows == q.shape[1];

  // Host inputs: contiguous device copies.
  std::vector<std::unique_ptr<DeviceBuffer>> keep;
  auto to_device = [&](const TensorView& t, const char* name) -> TensorView {
    if (t.device == Device::cuda) return t;
    require(t.dtype == DType::bf16 || t.dtype == DType::f16, ErrorKind::dtype,
            std::string("cuda::tau_density: ") + name + " must be bf16 or f16 (the GPU path does not round f32), got " +
                t.describe());
    require(t.data != nullptr, ErrorKind::invalid_argument, std::string("cuda::tau_density: ") + name + " has no data");
    const std::int64_t n = t.shape[0] * t.shape[1] * t.shape[2];
    std::vector<std::uint16_t> host(static_cast<std::size_t>(n));
    const auto* src = static_cast<const std::uint16_t*>(t.data);
    for (std::int64_t h = 0, i = 0; h < t.shape[0]; ++h)
      for (std::int64_t r2 = 0; r2 < t.shape[1]; ++r2, i += t.shape[2]) {
        const std::uint16_t* row = src + h * t.strides[0] + r2 * t.strides[1];
        if (t.strides[2] == 1) std::memcpy(&host[i], row, 2 * t.shape[2]);
        else for (std::int64_t d = 0; d < t.shape[2]; ++d) host[i + d] = row[d * t.strides[2]];
      }
    keep.push_back(std::make_unique<DeviceBuffer>(2 * host.size()));
    ok(cudaMemcpyAsync(keep.back()->p, host.data(), 2 * host.size(), cudaMemcpyHostToDevice, st),
       "cuda::tau_density: upload");
    ok(cudaStreamSynchronize(st), "cuda::tau_density: upload");
    return TensorView::contiguous(keep.back()->p, t.dtype, {t.shape[0], t.shape[1], t.shape[2]}, Device::cuda);
  };
  const TensorView dq = to_device(q, "q"), dk = to_device(k, "k");

  const std::size_t ws = tau_density_workspace_bytes(H, nrows);
  const std::size_t per_row = static_cast<std::size_t>(H * nrows) * 4;
  DeviceBuffer work(ws), heads_out(H * 20 + 64), row_out(3 * per_row + 1024), drows(all ? 16 : 8 * nrows);
  if (!all)
    ok(cudaMemcpyAsync(drows.p, r.rows.data(), 8 * nrows, cudaMemcpyHostToDevice, st), "cuda::tau_density: upload");
  DensityOutputs o;
  o.density = static_cast<double*>(heads_out.p);
  o.bound = o.density + H;
  o.fallbacks = reinterpret_cast<std::int32_t*>(o.bound + H);
  o.counts = static_cast<std::int32_t*>(row_out.p);
  o.count_lo = o.counts + H * nrows;
  o.count_hi = o.count_lo + H * nrows;
  tau_density(dq, dk, tau, all ? nullptr : static_cast<const std::int64_t*>(drows.p), nrows, work.p, ws, o, stream);
  r.density.resize(H), r.bound.resize(H), r.fallbacks.resize(H);
  r.counts.resize(H * nrows), r.count_lo.resize(H * nrows), r.count_hi.resize(H * nrows);
  ok(cudaMemcpyAsync(r.density.data(), o.density, 8 * H, cudaMemcpyDeviceToHost, st), "cuda::tau_density: download");
  ok(cudaMemcpyAsync(r.bound.data(), o.bound, 8 * H, cudaMemcpyDeviceToHost, st), "cuda::tau_density: download");
  ok(cudaMemcpyAsync(r.fallbacks.data(), o.fallbacks, 4 * H, cudaMemcpyDeviceToHost, st), "cuda::tau_density: download");
  ok(cudaMemcpyAsync(r.counts.data(), o.counts, per_row, cudaMemcpyDeviceToHost, st), "cuda::tau_density: download");
  ok(cudaMemcpyAsync(r.count_lo.data(), o.count_lo, per_row, cudaMemcpyDeviceToHost, st), "cuda::tau_density: download");
  ok(cudaMemcpyAsync(r.count_hi.data(), o.count_hi, per_row, cudaMemcpyDeviceToHost, st), "cuda::tau_density: download");
  ok(cudaStreamSynchronize(st), "cuda::tau_density");
  for (const double d : r.density)
    require(!std::isnan(d), ErrorKind::invalid_argument,
            "cuda::tau_density: q or k holds NaN or infinite values (in the rows measured)");
  return r;
}

}  // namespace svoo::cuda
