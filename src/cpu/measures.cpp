// Spec 3 measures that compare a selection with dense attention: block density, attention recall
// and output error. (The tau-density of spec 1 lives in density.cpp.)
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "head_buffer.hpp"
#include "svoo/attention_shape.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"

namespace svoo {
namespace {

void check_selection(const Clustering& c, const Selection& s) {
  check_clustering(c);
  require(s.heads == c.heads && s.kq == c.kq && s.kk == c.kk &&
              s.keep.size() == static_cast<std::size_t>(c.heads) * c.kq * c.kk,
          ErrorKind::shape, "the selection does not match the clustering's heads and cluster counts");
}

}  // namespace

std::vector<double> block_density(const Clustering& c, const Selection& s) {
  check_selection(c, s);
  std::vector<double> out(static_cast<std::size_t>(c.heads));
  const double total = static_cast<double>(c.q_tokens) * static_cast<double>(c.k_tokens);
  for (std::int64_t h = 0; h < c.heads; ++h) {
    double kept = 0.0;
    for (int i = 0; i < c.kq; ++i) {
      const double rows = c.q_sizes[h * c.kq + i];
      if (rows == 0) continue;
      for (int j = 0; j < c.kk; ++j)
        if (s.kept(h, i, j)) kept += rows * c.k_sizes[h * c.kk + j];
    }
    out[h] = kept / total;
  }
  return out;
}

std::vector<double> attention_recall(const TensorView& q, const TensorView& k, const Clustering& c,
                                     const Selection& s, const RowSample& sample) {
  const AttentionShape shape = check_qkv(q, k, nullptr, Device::cpu, "attention_recall");
  check_selection(c, s);
  require(c.heads == shape.heads && c.q_tokens == shape.q_tokens && c.k_tokens == shape.k_tokens, ErrorKind::shape,
          "attention_recall: the clustering does not match the shapes of q and k");
  const std::vector<std::int64_t> rows = sample_rows(shape.q_tokens, sample);
  const std::int64_t nrows = static_cast<std::int64_t>(rows.size()), nk = shape.k_tokens, dim = shape.dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  constexpr std::int64_t kBlock = 32;
  std::vector<double> recall(static_cast<std::size_t>(shape.heads));
  for (std::int64_t h = 0; h < shape.heads; ++h) {
    const std::vector<float> qh = cpu::gather_head(q, h, "q");
    const std::vector<float> kh = cpu::gather_head(k, h, "k");
    const std::int32_t* lq = c.q_labels.data() + h * shape.q_tokens;
    const std::int32_t* lk = c.k_labels.data() + h * nk;
    double total = 0.0;
#pragma omp parallel reduction(+ : total)
    {
      std::vector<float> qb(static_cast<std::size_t>(kBlock * dim)), sb(static_cast<std::size_t>(kBlock * nk));
#pragma omp for schedule(dynamic)
      for (std::int64_t b0 = 0; b0 < nrows; b0 += kBlock) {
        const std::int64_t nb = std::min(kBlock, nrows - b0);
        for (std::int64_t r = 0; r < nb; ++r) std::copy_n(qh.data() + rows[b0 + r] * dim, dim, qb.data() + r * dim);
        cpu::gemm_nt(nb, nk, dim, scale, qb.data(), dim, kh.data(), dim, 0.0f, sb.data(), nk);
        for (std::int64_t r = 0; r < nb; ++r) {
          const float* row = sb.data() + r * nk;
          const float m = *std::max_element(row, row + nk);
          const std::uint8_t* keep = s.keep.data() + (static_cast<std::size_t>(h) * c.kq + lq[rows[b0 + r]]) * c.kk;
          double all = 0.0, kept = 0.0;
          for (std::int64_t n = 0; n < nk; ++n) {
            const double e = std::exp(static_cast<double>(row[n] - m));
            all += e;
            if (keep[lk[n]]) kept += e;
          }
          total += kept / all;
        }
      }
    }
    recall[h] = total / static_cast<double>(nrows);
  }
  return recall;
}

namespace {

struct Sums {
  double diff = 0, ref = 0, approx = 0, dot = 0;
  OutputError finish() const {
    OutputError e;
    e.relative_l2 = ref > 0 ? std::sqrt(diff / ref) : (diff > 0 ? INFINITY : 0.0);
    e.cosine = (ref > 0 && approx > 0) ? dot / std::sqrt(ref * approx) : (ref == approx ? 1.0 : 0.0);
    return e;
  }
};

std::vector<Sums> head_sums(const TensorView& a, const TensorView& b) {
  require(a.rank == 3 && b.rank == 3 && a.shape == b.shape, ErrorKind::shape,
          "output_error: tensors must have the same [heads, tokens, dim] shape, got " + a.describe() + " and " +
              b.describe());
  require(is_floating(a.dtype) && is_floating(b.dtype), ErrorKind::dtype, "output_error: floating tensors only");
  require(a.device == Device::cpu && b.device == Device::cpu, ErrorKind::device, "output_error: cpu tensors only");
  require(a.strides[2] == 1 && b.strides[2] == 1, ErrorKind::stride, "output_error: last dimension must be contiguous");
  std::vector<Sums> sums(static_cast<std::size_t>(a.shape[0]));
  for (std::int64_t h = 0; h < a.shape[0]; ++h) {
    const std::vector<float> x = cpu::gather_head(a, h, "approx");
    const std::vector<float> y = cpu::gather_head(b, h, "reference");
    Sums& s = sums[h];
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double d = static_cast<double>(x[i]) - y[i];
      s.diff += d * d;
      s.ref += static_cast<double>(y[i]) * y[i];
      s.approx += static_cast<double>(x[i]) * x[i];
      s.dot += static_cast<double>(x[i]) * y[i];
    }
  }
  return sums;
}

}  // namespace

std::vector<OutputError> output_error(const TensorView& approx, const TensorView& reference) {
  std::vector<OutputError> out;
  for (const Sums& s : head_sums(approx, reference)) out.push_back(s.finish());
  return out;
}

OutputError output_error_total(const TensorView& approx, const TensorView& reference) {
  Sums total;
  for (const Sums& s : head_sums(approx, reference)) {
    total.diff += s.diff;
    total.ref += s.ref;
    total.approx += s.approx;
    total.dot += s.dot;
  }
  return total.finish();
}

}  // namespace svoo
