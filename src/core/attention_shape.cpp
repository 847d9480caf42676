#include "svoo/attention_shape.hpp"

#include <algorithm>
#include <string>

#include "svoo/error.hpp"

namespace svoo {
namespace {

void check_view(const TensorView& t, const char* name, Device device, const char* where) {
  const std::string who = std::string(where) + ": " + name;
  require(t.data != nullptr, ErrorKind::invalid_argument, who + " has no data pointer");
  require(t.rank == 3, ErrorKind::shape,
          who + " must have shape [heads, tokens, head_dim], got " + t.describe());
  require(is_floating(t.dtype), ErrorKind::dtype, who + " must be f32, f16 or bf16, got " + t.describe());
  require(t.device == device, ErrorKind::device,
          who + " must be on " + device_name(device) + ", got " + t.describe());
  for (int d = 0; d < 3; ++d)
    require(t.shape[d] > 0, ErrorKind::shape, who + " has an empty dimension: " + t.describe());
  require(t.strides[2] == 1, ErrorKind::stride,
          who + " must be contiguous in head_dim (last stride 1), got " + t.describe());
  require(t.strides[0] > 0 && t.strides[1] > 0, ErrorKind::stride,
          who + " must have positive strides, got " + t.describe());
}

}  // namespace

AttentionShape check_qkv(const TensorView& q, const TensorView& k, const TensorView* v, Device device,
                         const char* where) {
  check_view(q, "q", device, where);
  check_view(k, "k", device, where);
  if (v) check_view(*v, "v", device, where);
  const std::string w(where);
  require(k.dtype == q.dtype && (!v || v->dtype == q.dtype), ErrorKind::dtype,
          w + ": q, k and v must share one dtype, got q " + dtype_name(q.dtype) + ", k " + dtype_name(k.dtype) +
              (v ? std::string(", v ") + dtype_name(v->dtype) : std::string()));
  require(k.shape[0] == q.shape[0], ErrorKind::shape,
          w + ": q and k must have the same number of heads, got q " + q.describe() + " and k " + k.describe());
  require(k.shape[2] == q.shape[2], ErrorKind::shape,
          w + ": q and k must have the same head_dim, got q " + q.describe() + " and k " + k.describe());
  if (v) {
    require(v->shape[0] == k.shape[0] && v->shape[1] == k.shape[1] && v->shape[2] == k.shape[2], ErrorKind::shape,
            w + ": v must have the shape of k, got k " + k.describe() + " and v " + v->describe());
  }
  return {q.shape[0], q.shape[1], k.shape[1], q.shape[2]};
}

void check_output(const TensorView& out, const AttentionShape& s, Device device, const char* where) {
  check_view(out, "out", device, where);
  const std::string w(where);
  require(out.shape[0] == s.heads && out.shape[1] == s.q_tokens && out.shape[2] == s.dim, ErrorKind::shape,
          w + ": out must have shape [" + std::to_string(s.heads) + ", " + std::to_string(s.q_tokens) + ", " +
              std::to_string(s.dim) + "], got " + out.describe());
  // Rows must not overlap: the smaller outer stride must step over a whole row, the larger over
  // every row of the smaller dimension.
  std::int64_t st[2] = {out.strides[0], out.strides[1]};
  std::int64_t ex[2] = {out.shape[0], out.shape[1]};
  if (st[0] > st[1]) {
    std::swap(st[0], st[1]);
    std::swap(ex[0], ex[1]);
  }
  const bool inner_ok = ex[0] == 1 || st[0] >= s.dim;
  const bool outer_ok = ex[1] == 1 || st[1] >= (ex[0] == 1 ? s.dim : st[0] * ex[0]);
  require(inner_ok && outer_ok, ErrorKind::stride, w + ": out has overlapping rows: " + out.describe());
}

}  // namespace svoo
