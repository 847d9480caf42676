// The capture profiler: naming, equality with tau_density called directly, aggregation,
// resume, CSV round trip with statistics, and errors.
#include <gtest/gtest.h>

#include <filesystem>

#include "svoo/error.hpp"
#include "svoo/profiler.hpp"
#include "svoo/synthetic_capture.hpp"

namespace svoo {
namespace {

SafetensorsFile tiny_capture(std::uint64_t seed) {
  SyntheticCaptureConfig c;
  c.steps = 2;
  c.layers = 2;
  c.layer.frames = 2;
  c.layer.height = 4;
  c.layer.width = 6;
  c.layer.heads = 2;
  c.layer.dim = 16;
  c.layer.seed = seed;
  c.jitter = 0.5;  // inputs differ, so max and quantile differ from any single input
  return make_synthetic_capture(c);
}

TEST(Capture, SlotsAndNames) {
  const SafetensorsFile f = tiny_capture(1);
  const auto slots = capture_slots(f, "x");
  ASSERT_EQ(slots.size(), 4u);
  EXPECT_EQ(slots.front(), (CaptureSlot{1, 0}));
  EXPECT_EQ(slots.back(), (CaptureSlot{2, 1}));
  EXPECT_EQ(capture_tensor_name('k', {3, 7}), "k.s3.l7");
}

TEST(Capture, BadNamesAndMissingK) {
  SafetensorsFile f = tiny_capture(1);
  SafetensorsFile missing = f;
  missing.tensors.erase(missing.tensors.begin() + 1);  // k.s1.l0
  try {
    capture_slots(missing, "in.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'q.s1.l0' has no 'k.s1.l0'"), std::string::npos) << e.what();
  }
  for (const char* bad : {"q.s0.l1", "q.s01.l1", "q.s1.lx", "query", "q.s1.l-1"}) {
    SafetensorsFile g = f;
    g.tensors[0].first = bad;
    EXPECT_THROW(capture_slots(g, "in"), Error) << bad;
  }
}

TEST(Profiler, EqualsTauDensityAndAggregates) {
  const std::vector<SafetensorsFile> caps{tiny_capture(1), tiny_capture(2)};
  ProfilerOptions o;
  o.rows = {10, 3};
  for (Aggregate agg : {Aggregate::max, Aggregate::quantile}) {
    o.aggregate = agg;
    const Profile p = profile_captures(caps, {"a", "b"}, o);
    ASSERT_EQ(p.steps(), 2);
    ASSERT_EQ(p.layers(), 2);
    ASSERT_EQ(p.heads(), 2);
    ASSERT_TRUE(p.complete());
    for (const auto& slot : capture_slots(caps[0], "a")) {
      std::vector<std::vector<double>> d;
      for (const auto& c : caps)
        d.push_back(tau_density(c.at(capture_tensor_name('q', slot)).view(), c.at(capture_tensor_name('k', slot)).view(),
                                0.95, o.rows));
      for (int h = 0; h < 2; ++h) {
        const std::vector<double> v{d[0][h], d[1][h]};
        const EntryStats want = entry_stats(v);
        const EntryStats got = *p.stats(slot.step, slot.layer, h);
        EXPECT_EQ(got.count, 2);
        EXPECT_DOUBLE_EQ(got.mean, want.mean);
        EXPECT_DOUBLE_EQ(got.std, want.std);
        EXPECT_DOUBLE_EQ(got.min, want.min);
        EXPECT_DOUBLE_EQ(got.max, want.max);
        EXPECT_DOUBLE_EQ(*p.density(slot.step, slot.layer, h), aggregate_value(want, agg));
      }
    }
    // CSV round trip keeps the statistics.
    const Profile back = parse_profile_csv(format_profile_csv(p));
    EXPECT_EQ(format_profile_csv(back), format_profile_csv(p));
    EXPECT_EQ(back.stats(2, 1, 1)->count, 2);
  }
}

TEST(Profiler, ResumeSkipsPresentSlots) {
  const std::vector<SafetensorsFile> caps{tiny_capture(1), tiny_capture(2)};
  const Profile full = profile_captures(caps, {"a", "b"}, {});
  // A partial result: only (step 1, layer 0), with a marker value that a recomputation would replace.
  Profile partial(2, 2, 2);
  for (int h = 0; h < 2; ++h) {
    EntryStats s = *full.stats(1, 0, h);
    partial.set(1, 0, h, 0.123, s);
  }
  int skipped = 0, computed = 0;
  const Profile p = profile_captures(caps, {"a", "b"}, {}, &partial,
                                     [&](const Profile&, const CaptureSlot&, int, int total, bool skip) {
                                       EXPECT_EQ(total, 4);
                                       (skip ? skipped : computed)++;
                                     });
  EXPECT_EQ(skipped, 1);
  EXPECT_EQ(computed, 3);
  EXPECT_EQ(*p.density(1, 0, 0), 0.123);
  EXPECT_EQ(*p.density(2, 1, 1), *full.density(2, 1, 1));
  // An entry with another count (other inputs) is recomputed.
  Profile other(2, 2, 2);
  EntryStats s3 = *full.stats(1, 0, 0);
  s3.count = 3;
  other.set(1, 0, 0, 0.123, s3), other.set(1, 0, 1, 0.123, s3);
  EXPECT_EQ(*profile_captures(caps, {"a", "b"}, {}, &other).density(1, 0, 0), *full.density(1, 0, 0));
}

TEST(Profiler, MismatchedInputsAreErrors) {
  SyntheticCaptureConfig c;
  c.steps = 2, c.layers = 2, c.layer.frames = 2, c.layer.height = 4, c.layer.width = 6, c.layer.heads = 3,
  c.layer.dim = 16;
  const std::vector<SafetensorsFile> heads{tiny_capture(1), make_synthetic_capture(c)};
  try {
    profile_captures(heads, {"a", "b"}, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("same heads"), std::string::npos) << e.what();
  }
  c.layer.heads = 2;
  c.layers = 1;
  const std::vector<SafetensorsFile> slots{tiny_capture(1), make_synthetic_capture(c)};
  EXPECT_THROW(profile_captures(slots, {"a", "b"}, {}), Error);
}

TEST(Profiler, AtomicSaveReplacesTheFile) {
  const auto path = (std::filesystem::temp_directory_path() / "svoo_profiler_atomic.csv").string();
  Profile p(1, 1, 1);
  p.set(1, 0, 0, 0.5, EntryStats{2, 0.4, 0.1, 0.3, 0.5});
  save_profile_csv_atomic(path, p);
  p.set(1, 0, 0, 0.25, EntryStats{2, 0.2, 0.05, 0.15, 0.25});
  save_profile_csv_atomic(path, p);
  EXPECT_EQ(*load_profile_csv(path).density(1, 0, 0), 0.25);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace svoo

namespace svoo {
namespace {

// --device cuda: without a CUDA build or a visible GPU (CI) an unsupported error before any work;
// with one, the tiny capture (dim 16) is refused by the kernel (head dim 128 only).
TEST(Profiler, CudaDeviceFailsCleanlyWhereItCannotRun) {
  const std::vector<SafetensorsFile> caps{tiny_capture(1)};
  ProfilerOptions o;
  o.device = Device::cuda;
  try {
    profile_captures(caps, {"a"}, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(e.kind() == ErrorKind::unsupported || e.kind() == ErrorKind::dtype) << e.what();
  }
}

}  // namespace
}  // namespace svoo
