#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "svoo/error.hpp"
#include "svoo/tensor.hpp"

namespace svoo {
namespace {

TEST(HalfConversion, Bf16RoundTripsExactValuesAndRoundsToNearestEven) {
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(-3.5f)), -3.5f);
  // 1 + 2^-8 is halfway between two bf16 values (1 and 1 + 2^-7): ties go to the even one, 1.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
}

TEST(HalfConversion, F16MatchesKnownEncodings) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(1e6f), 0x7c00);                        // overflow to infinity
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);       // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -26)), 0x0000);       // underflow
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(NAN))));
}

TEST(HalfConversion, F16RoundTripErrorWithinHalfAnUlpOnRandomValues) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 10.0f);
  for (int i = 0; i < 100000; ++i) {
    const float x = dist(rng);
    const float y = f16_to_float(float_to_f16(x));
    // relative spacing of f16 is 2^-10; half an ulp is 2^-11 relative (normal range)
    if (std::fabs(x) > 1e-4f) EXPECT_LE(std::fabs(y - x), std::fabs(x) * std::ldexp(1.0f, -11) * 1.0001f) << x;
    // every f16 value converts back to itself
    EXPECT_EQ(float_to_f16(y), float_to_f16(x));
  }
}

TEST(TensorView, ContiguousStridesAndDescription) {
  float buf[24];
  auto v = TensorView::contiguous(buf, DType::f32, {2, 3, 4});
  EXPECT_EQ(v.strides[0], 12);
  EXPECT_EQ(v.strides[1], 4);
  EXPECT_EQ(v.strides[2], 1);
  EXPECT_EQ(v.numel(), 24);
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.describe(), "f32[2, 3, 4] strides [12, 4, 1] on cpu");
}

TEST(HostTensor, ViewSharesStorageAndConverts) {
  HostTensor t(DType::bf16, {2, 2});
  t.set(3, 1.5f);
  EXPECT_EQ(t.get(3), 1.5f);
  EXPECT_EQ(t.nbytes(), 8u);
  auto v = t.view();
  EXPECT_EQ(v.data, t.bytes());
  EXPECT_THROW(HostTensor(DType::f32, {-1}), Error);
}

}  // namespace
}  // namespace svoo
