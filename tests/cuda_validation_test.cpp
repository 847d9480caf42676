// The CUDA entry points reject bad arguments before touching the device, so these checks run on
// machines without a GPU (CI) too.
#ifdef SVOO_WITH_CUDA
#include <gtest/gtest.h>

#include <string>

#include "../src/cuda/kernels.cuh"
#include "svoo/cuda.hpp"
#include "svoo/error.hpp"

namespace svoo {
namespace {

TensorView device_view(DType dtype, std::int64_t h, std::int64_t n, std::int64_t d) {
  // Never dereferenced: validation fails (or is all that runs) before any launch.
  alignas(16) static std::uint16_t dummy[8];
  TensorView v = TensorView::contiguous(dummy, dtype, {h, n, d}, Device::cuda);
  return v;
}

template <class F>
void expect_error(F&& f, ErrorKind kind, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no error; expected " << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(CudaValidation, DenseAttentionRejectsBadViews) {
  const TensorView q = device_view(DType::bf16, 2, 64, 128);
  TensorView host = q;
  host.device = Device::cpu;
  expect_error([&] { cuda::dense_attention(host, q, q, q); }, ErrorKind::device, "q must be on cuda");
  const TensorView f32 = device_view(DType::f32, 2, 64, 128);
  expect_error([&] { cuda::dense_attention(f32, f32, f32, f32); }, ErrorKind::dtype, "bf16 or f16");
  const TensorView d64 = device_view(DType::bf16, 2, 64, 64);
  expect_error([&] { cuda::dense_attention(d64, d64, d64, d64); }, ErrorKind::unsupported, "head_dim 128");
  TensorView odd = q;
  odd.strides = {64 * 130, 130, 1, 0};  // rows not on 16-byte boundaries
  expect_error([&] { cuda::dense_attention(odd, q, q, q); }, ErrorKind::stride, "16-byte");
  TensorView far = q;
  far.strides = {std::int64_t{1} << 31, std::int64_t{1} << 31, 1, 0};  // rows 4 GiB apart
  expect_error([&] { cuda::dense_attention(q, far, q, q); }, ErrorKind::stride, "k rows must be less than 4 GiB apart");
  TensorView backwards = q;
  backwards.strides = {-64 * 128, 128, 1, 0};  // heads stored last to first
  expect_error([&] { cuda::dense_attention(q, q, backwards, q); }, ErrorKind::stride, "v must not have negative strides");
  TensorView col = q;
  col.strides = {64 * 128, 1, 64, 0};
  expect_error([&] { cuda::dense_attention(col, q, q, q); }, ErrorKind::stride, "contiguous in head_dim");
  const TensorView f16 = device_view(DType::f16, 2, 64, 128);
  expect_error([&] { cuda::dense_attention(q, q, q, f16); }, ErrorKind::dtype, "share one dtype");
  const TensorView short_v = device_view(DType::bf16, 2, 63, 128);
  expect_error([&] { cuda::dense_attention(q, q, short_v, q); }, ErrorKind::shape, "v must have shape");
}

TEST(CudaValidation, PlannerRejectsUnsupportedShapesBeforeAllocating) {
  expect_error([] { cuda::Planner p({2, 100, 100, 64, 8, 16}); }, ErrorKind::unsupported, "head_dim 128");
  expect_error([] { cuda::Planner p({2, 100, 100, 128, 8, 5000}); }, ErrorKind::invalid_argument, "kk <= 4096");
  expect_error([] { cuda::Planner p({0, 100, 100, 128, 8, 16}); }, ErrorKind::invalid_argument, "at least one head");
  expect_error([] { cuda::Planner p({2, 100, 100, 128, 8, 16, 512}); }, ErrorKind::invalid_argument,
               "query_align must be in [0, 256]");
  expect_error([] { cuda::Planner p({2, 10000, 100, 128, 5000, 16, 128}); }, ErrorKind::invalid_argument,
               "aligning needs kq <= 4096");
}

// The alignment's candidate launcher writes `e` entries a row `entry_stride` apart: one entry
// only may be packed (the planner's first-candidate arrays).
TEST(CudaValidation, AlignCandidatesRejectAnEntryStrideTheListsDoNotFit) {
  cuda::detail::RowsView x{nullptr, cuda::detail::Elem::bf16, 1, 10, 128, 1280, 128};
  auto launch = [&](int e, int stride) {
    cuda::detail::launch_align_candidates(x, nullptr, nullptr, 4, nullptr, nullptr, nullptr, nullptr, e, nullptr,
                                          nullptr, stride, nullptr);
  };
  expect_error([&] { launch(2, 1); }, ErrorKind::invalid_argument, "entry stride of 8");
  expect_error([&] { launch(9, 8); }, ErrorKind::invalid_argument, "1 to 8 candidates");
  expect_error([&] { launch(0, 8); }, ErrorKind::invalid_argument, "1 to 8 candidates");
  expect_error(
      [&] {
        cuda::detail::launch_align_candidates_listed(x, nullptr, nullptr, 4, nullptr, nullptr, nullptr, 10, 10, nullptr,
                                                     9, nullptr, nullptr, nullptr);
      },
      ErrorKind::invalid_argument, "1 to 8 candidates");
}

// The roles and rounds of a pass take its bar for taking rows (svoo::alignment_take_above): one
// outside [1, align / 2] is named before anything launches.
TEST(CudaValidation, AlignmentPassesRejectABarOutsideTheirRange) {
  for (const int bar : {0, 65}) {
    expect_error(
        [bar] {
          cuda::detail::launch_alignment_roles(nullptr, 2, 8, 128, bar, nullptr, nullptr, nullptr, nullptr, nullptr);
        },
        ErrorKind::invalid_argument, "taking bar in [1, align / 2]");
  }
  expect_error(
      [] {
        cuda::detail::launch_align_rounds(nullptr, nullptr, nullptr, 2, 100, 8, 64, 33, 8, nullptr, nullptr, nullptr,
                                          nullptr);
      },
      ErrorKind::invalid_argument, "taking bar in [1, align / 2]");
}

TEST(CudaValidation, TauDensityRejectsBadArguments) {
  const TensorView q = device_view(DType::bf16, 1, 1, 128);
  cuda::DensityOutputs o;
  double d = 0;
  o.density = &d;
  alignas(256) static char ws[256];
  TensorView host = q;
  host.device = Device::cpu;
  expect_error([&] { cuda::tau_density(host, q, 0.9, nullptr, 1, ws, sizeof ws, o); }, ErrorKind::device,
               "q must be on cuda");
  expect_error([&] { cuda::tau_density(q, q, 1.5, nullptr, 1, ws, sizeof ws, o); }, ErrorKind::invalid_argument,
               "tau must be in (0, 1]");
  expect_error([&] { cuda::tau_density(q, q, 0.9, nullptr, 2, ws, sizeof ws, o); }, ErrorKind::invalid_argument,
               "nrows must equal q's tokens");
  expect_error([&] { cuda::tau_density(q, q, 0.9, nullptr, 1, nullptr, 0, o); }, ErrorKind::invalid_argument,
               "the workspace needs");
  const TensorView d64 = device_view(DType::bf16, 1, 1, 64);
  expect_error([&] { cuda::tau_density(d64, d64, 0.9, nullptr, 1, ws, sizeof ws, o); }, ErrorKind::unsupported,
               "head_dim 128");
  const TensorView f16 = device_view(DType::f16, 1, 1, 128);
  expect_error([&] { cuda::tau_density(q, f16, 0.9, nullptr, 1, ws, sizeof ws, o); }, ErrorKind::dtype,
               "share one dtype");
  const TensorView two = device_view(DType::bf16, 2, 1, 128);
  expect_error([&] { cuda::tau_density(q, two, 0.9, nullptr, 1, ws, sizeof ws, o); }, ErrorKind::shape,
               "same heads");
  cuda::DensityOutputs none;
  expect_error([&] { cuda::tau_density(q, q, 0.9, nullptr, 1, ws, sizeof ws, none); }, ErrorKind::invalid_argument,
               "out.density is null");
  const TensorView huge = device_view(DType::bf16, 1, std::int64_t{1} << 26, 128);
  expect_error([&] { cuda::tau_density(huge, huge, 0.9, nullptr, huge.shape[1], ws, sizeof ws, o); },
               ErrorKind::unsupported, "beyond 2^45 score pairs");
  alignas(16) std::uint16_t f32host[8] = {};
  const TensorView f32 = TensorView::contiguous(f32host, DType::f32, {1, 1, 128});
  expect_error([&] { cuda::tau_density(f32, f32, 0.9, RowSample{}); }, ErrorKind::dtype, "must be bf16 or f16");
}

// Valid arguments on a machine without a GPU: a named error before any allocation or launch (on
// a GPU machine the same calls would run, so the check is skipped there).
TEST(CudaValidation, ValidCallsWithoutADeviceNameTheProblem) {
  if (cuda::available()) GTEST_SKIP() << "a CUDA device is present";
  expect_error([] { cuda::Planner p({2, 100, 100, 128, 8, 16}); }, ErrorKind::unsupported,
               "cuda::Planner: no CUDA device is available");
  const TensorView q = device_view(DType::bf16, 2, 64, 128);
  expect_error([&] { cuda::dense_attention(q, q, q, q); }, ErrorKind::unsupported,
               "cuda::dense_attention: no CUDA device is available");
  const TensorView one = device_view(DType::bf16, 1, 1, 128);
  cuda::DensityOutputs o;
  double d = 0;
  o.density = &d;
  alignas(256) static char ws[1 << 16];
  ASSERT_LE(cuda::tau_density_workspace_bytes(1, 1), sizeof ws);
  expect_error([&] { cuda::tau_density(one, one, 0.9, nullptr, 1, ws, sizeof ws, o); }, ErrorKind::unsupported,
               "cuda::tau_density: no CUDA device is available");
}

}  // namespace
}  // namespace svoo
#endif
