// Spec 2.4 on the CPU: variable-block sparse attention over a BlockLayout, and dense attention.
// Per head, K and V are gathered into permuted order so that every kept key range is a contiguous
// block of rows; each (query cluster, row chunk) then needs a few matrix products: scores against
// each range, one exact softmax over their union, and the weighted sum of V. fp32 throughout.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "head_buffer.hpp"
#include "svoo/attention_shape.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"

namespace svoo::cpu {
namespace {

constexpr std::int64_t kRowChunk = 64;  // query rows per work item: bounds the score buffer

struct Range {
  std::int64_t begin, end;
};

// Exact softmax attention of `rows` query rows (row-major, dim wide) over the union of `ranges`
// of (kp, vp). Writes out[rows x dim] and, if lse, the log-sum-exp per row.
void attend_rows(const float* qrows, std::int64_t rows, const float* kp, const float* vp, std::int64_t dim,
                 const Range* ranges, std::int64_t nranges, float scale, std::vector<float>& s, float* out,
                 float* lse) {
  std::int64_t keys = 0;
  for (std::int64_t r = 0; r < nranges; ++r) keys += ranges[r].end - ranges[r].begin;
  if (keys == 0) {
    std::fill(out, out + rows * dim, 0.0f);
    if (lse) std::fill(lse, lse + rows, -std::numeric_limits<float>::infinity());
    return;
  }
  s.resize(static_cast<std::size_t>(rows * keys));
  std::int64_t col = 0;
  for (std::int64_t r = 0; r < nranges; ++r) {
    const std::int64_t len = ranges[r].end - ranges[r].begin;
    gemm_nt(rows, len, dim, scale, qrows, dim, kp + ranges[r].begin * dim, dim, 0.0f, s.data() + col, keys);
    col += len;
  }
  std::vector<float> inv_sum(static_cast<std::size_t>(rows));
  for (std::int64_t i = 0; i < rows; ++i) {
    float* row = s.data() + i * keys;
    float m = row[0];
    for (std::int64_t j = 1; j < keys; ++j) m = std::max(m, row[j]);
    double sum = 0.0;
    for (std::int64_t j = 0; j < keys; ++j) {
      row[j] = std::exp(row[j] - m);
      sum += row[j];
    }
    inv_sum[i] = static_cast<float>(1.0 / sum);
    if (lse) lse[i] = m + static_cast<float>(std::log(sum));
  }
  col = 0;
  for (std::int64_t r = 0; r < nranges; ++r) {
    const std::int64_t len = ranges[r].end - ranges[r].begin;
    gemm_nn(rows, dim, len, 1.0f, s.data() + col, keys, vp + ranges[r].begin * dim, dim, r == 0 ? 0.0f : 1.0f, out,
            dim);
    col += len;
  }
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t d = 0; d < dim; ++d) out[i * dim + d] *= inv_sum[i];
}

// Rows of head h of t in the order of perm (perm == nullptr: identity), as a contiguous fp32 buffer.
std::vector<float> gather_permuted(const TensorView& t, std::int64_t h, const std::int32_t* perm, const char* name) {
  std::vector<float> plain = gather_head(t, h, name);
  if (!perm) return plain;
  const std::int64_t tokens = t.shape[1], dim = t.shape[2];
  std::vector<float> out(plain.size());
  for (std::int64_t r = 0; r < tokens; ++r) std::copy_n(plain.data() + perm[r] * dim, dim, out.data() + r * dim);
  return out;
}

struct WorkItem {
  std::int64_t row_begin, row_end;  // permuted query rows
  std::int64_t range_begin, range_end;  // indices into the head's range list
};

// Runs one head: query rows in permuted order qperm (nullptr: identity), work items over them.
void run_head(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, std::int64_t h,
              const std::int32_t* qperm, const std::int32_t* kperm, const std::vector<WorkItem>& items,
              const std::vector<Range>& ranges, float* lse_head) {
  const std::int64_t dim = q.shape[2];
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const std::vector<float> qh = gather_head(q, h, "q");
  const std::vector<float> kp = gather_permuted(k, h, kperm, "k");
  const std::vector<float> vp = gather_permuted(v, h, kperm, "v");
#pragma omp parallel
  {
    std::vector<float> s, qc, oc, lc;
#pragma omp for schedule(dynamic)
    for (std::size_t w = 0; w < items.size(); ++w) {
      const WorkItem& it = items[w];
      const std::int64_t rows = it.row_end - it.row_begin;
      qc.resize(static_cast<std::size_t>(rows * dim));
      oc.resize(static_cast<std::size_t>(rows * dim));
      lc.resize(static_cast<std::size_t>(rows));
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t token = qperm ? qperm[it.row_begin + r] : it.row_begin + r;
        std::copy_n(qh.data() + token * dim, dim, qc.data() + r * dim);
      }
      attend_rows(qc.data(), rows, kp.data(), vp.data(), dim, ranges.data() + it.range_begin,
                  it.range_end - it.range_begin, scale, s, oc.data(), lc.data());
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t token = qperm ? qperm[it.row_begin + r] : it.row_begin + r;
        store_row(out, h, token, oc.data() + r * dim);
        if (lse_head) lse_head[token] = lc[r];
      }
    }
  }
}

void check_layout(const BlockLayout& L, const AttentionShape& s) {
  require(L.heads == s.heads && L.q_tokens == s.q_tokens && L.k_tokens == s.k_tokens, ErrorKind::shape,
          "the layout is for " + std::to_string(L.heads) + " heads x " + std::to_string(L.q_tokens) + " queries x " +
              std::to_string(L.k_tokens) + " keys, the tensors have " + std::to_string(s.heads) + " x " +
              std::to_string(s.q_tokens) + " x " + std::to_string(s.k_tokens));
  const bool sizes_ok = L.q_perm.size() == static_cast<std::size_t>(L.heads * L.q_tokens) &&
                        L.k_perm.size() == static_cast<std::size_t>(L.heads * L.k_tokens) &&
                        L.q_offsets.size() == static_cast<std::size_t>(L.heads * (L.kq + 1)) &&
                        L.k_offsets.size() == static_cast<std::size_t>(L.heads * (L.kk + 1)) &&
                        L.range_ptr.size() == static_cast<std::size_t>(L.heads * L.kq + 1) &&
                        L.range_begin.size() == L.range_end.size() &&
                        L.range_ptr.back() == static_cast<std::int64_t>(L.range_begin.size());
  require(sizes_ok, ErrorKind::shape, "the layout's arrays do not match its extents");
  for (std::size_t r = 0; r < L.range_begin.size(); ++r)
    require(0 <= L.range_begin[r] && L.range_begin[r] < L.range_end[r] && L.range_end[r] <= L.k_tokens,
            ErrorKind::invalid_argument, "key range " + std::to_string(r) + " is empty or outside [0, k_tokens)");
  for (std::int64_t h = 0; h < L.heads; ++h) {
    const std::int32_t* off = L.q_offsets.data() + h * (L.kq + 1);
    require(off[0] == 0 && off[L.kq] == L.q_tokens && std::is_sorted(off, off + L.kq + 1), ErrorKind::invalid_argument,
            "query cluster offsets of head " + std::to_string(h) + " are not a partition of the rows");
  }
  std::vector<std::uint8_t> seen;
  auto check_perm = [&](const std::int32_t* p, std::int64_t n, const char* side, std::int64_t h) {
    seen.assign(static_cast<std::size_t>(n), 0);
    for (std::int64_t r = 0; r < n; ++r) {
      require(p[r] >= 0 && p[r] < n && !seen[p[r]], ErrorKind::invalid_argument,
              std::string(side) + " permutation of head " + std::to_string(h) + " is not a permutation");
      seen[p[r]] = 1;
    }
  };
  for (std::int64_t h = 0; h < L.heads; ++h) {
    check_perm(L.q_perm.data() + h * L.q_tokens, L.q_tokens, "query", h);
    check_perm(L.k_perm.data() + h * L.k_tokens, L.k_tokens, "key", h);
  }
}

}  // namespace

void sparse_attention(const TensorView& q, const TensorView& k, const TensorView& v, const BlockLayout& layout,
                      const TensorView& out, float* lse) {
  const AttentionShape s = check_qkv(q, k, &v, Device::cpu, "cpu::sparse_attention");
  check_output(out, s, Device::cpu, "cpu::sparse_attention");
  check_layout(layout, s);
  for (std::int64_t h = 0; h < s.heads; ++h) {
    std::vector<Range> ranges;
    std::vector<WorkItem> items;
    const std::int32_t* off = layout.q_offsets.data() + h * (layout.kq + 1);
    for (int i = 0; i < layout.kq; ++i) {
      const std::int64_t w = h * layout.kq + i;
      const std::int64_t first = static_cast<std::int64_t>(ranges.size());
      for (std::int64_t r = layout.range_ptr[w]; r < layout.range_ptr[w + 1]; ++r)
        ranges.push_back({layout.range_begin[r], layout.range_end[r]});
      const std::int64_t last = static_cast<std::int64_t>(ranges.size());
      for (std::int64_t r0 = off[i]; r0 < off[i + 1]; r0 += kRowChunk)
        items.push_back({r0, std::min<std::int64_t>(r0 + kRowChunk, off[i + 1]), first, last});
    }
    run_head(q, k, v, out, h, layout.q_perm.data() + h * s.q_tokens, layout.k_perm.data() + h * s.k_tokens, items,
             ranges, lse ? lse + h * s.q_tokens : nullptr);
  }
}

void dense_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     float* lse) {
  const AttentionShape s = check_qkv(q, k, &v, Device::cpu, "cpu::dense_attention");
  check_output(out, s, Device::cpu, "cpu::dense_attention");
  const std::vector<Range> ranges{{0, s.k_tokens}};
  std::vector<WorkItem> items;
  for (std::int64_t r0 = 0; r0 < s.q_tokens; r0 += kRowChunk)
    items.push_back({r0, std::min(r0 + kRowChunk, s.q_tokens), 0, 1});
  for (std::int64_t h = 0; h < s.heads; ++h)
    run_head(q, k, v, out, h, nullptr, nullptr, items, ranges, lse ? lse + h * s.q_tokens : nullptr);
}

}  // namespace svoo::cpu
