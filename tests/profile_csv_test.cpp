#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "svoo/error.hpp"
#include "svoo/profile.hpp"

namespace svoo {
namespace {

namespace fs = std::filesystem;

// Parsing `text` must fail with Error(format) whose message names the source, the line and `what`.
void expect_format_error(const std::string& text, int line, const std::string& what) {
  SCOPED_TRACE(text.substr(0, 200));
  try {
    parse_profile_csv(text, "t.csv");
    ADD_FAILURE() << "parsed without error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("t.csv:" + std::to_string(line) + ": "), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

// A fresh directory for files a test writes, removed at the end.
struct TempDir {
  fs::path path = fs::temp_directory_path() / ("svoo_profile_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

constexpr const char* kHeader = "Step,Layer,Head,Sparsity\n";
constexpr const char* kStatsHeader = "Step,Layer,Head,Sparsity,Count,Mean,Std,Min,Max\n";

TEST(ProfileCsv, ParsesValuesAndSizesGridByLargestIndices) {
  const Profile p = parse_profile_csv(std::string(kHeader) + "1,0,0,0.5\n1,0,1,0.25\n2,1,0,1\n2,1,1,0\n");
  EXPECT_EQ(p.steps(), 2);
  EXPECT_EQ(p.layers(), 2);
  EXPECT_EQ(p.heads(), 2);
  EXPECT_EQ(p.size(), 4);
  EXPECT_FALSE(p.complete());  // 2 x 2 x 2 = 8 slots, 4 given
  EXPECT_FALSE(p.has_stats());
  EXPECT_EQ(p.density(1, 0, 1), 0.25);
  EXPECT_EQ(p.density(2, 1, 0), 1.0);
  EXPECT_EQ(p.density(2, 1, 1), 0.0);
  EXPECT_EQ(p.density(1, 1, 0), std::nullopt);  // absent
  EXPECT_EQ(p.density(3, 0, 0), std::nullopt);  // outside the grid
  EXPECT_EQ(p.density(0, 0, 0), std::nullopt);
  EXPECT_DOUBLE_EQ(p.mean_density(), (0.5 + 0.25 + 1 + 0) / 4);
  const auto st = p.stats(1, 0, 0);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->count, 0);
  EXPECT_EQ(p.stats(1, 1, 0), std::nullopt);
}

TEST(ProfileCsv, AcceptsCrlfAndMissingFinalNewline) {
  const Profile a = parse_profile_csv("Step,Layer,Head,Sparsity\r\n1,0,0,0.125\r\n1,0,1,0.75\r\n");
  const Profile b = parse_profile_csv("Step,Layer,Head,Sparsity\n1,0,0,0.125\n1,0,1,0.75");
  for (const Profile* p : {&a, &b}) {
    EXPECT_TRUE(p->complete());
    EXPECT_EQ(p->density(1, 0, 0), 0.125);
    EXPECT_EQ(p->density(1, 0, 1), 0.75);
  }
}

TEST(ProfileCsv, RoundTripsWithoutStats) {
  Profile p(3, 2, 2);
  const double values[] = {0.0, 1.0, 0.7058, 1.0 / 3.0, 1e-7, 0.5, 0.0038, 0.9999999999999999};
  int i = 0;
  for (int s = 1; s <= 2; ++s)  // step 3 left empty: a sparse profile
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 2; ++h) p.set(s, l, h, values[i++]);
  const std::string text = format_profile_csv(p);
  EXPECT_EQ(text.rfind(kHeader, 0), 0u);
  EXPECT_EQ(text.find("Count"), std::string::npos);
  EXPECT_NE(text.find("\n1,0,0,0.0\n"), std::string::npos) << text;  // as pandas writes it
  EXPECT_NE(text.find("\n1,0,1,1.0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n2,0,0,1e-07\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n2,1,0,0.0038\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n1,1,0,0.7058\n"), std::string::npos) << text;  // shortest form, no noise digits
  const Profile q = parse_profile_csv(text);
  EXPECT_EQ(q.steps(), 2);  // grid sized by the entries present
  EXPECT_EQ(q.size(), 8);
  i = 0;
  for (int s = 1; s <= 2; ++s)
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 2; ++h) EXPECT_EQ(q.density(s, l, h), values[i++]);  // bit-exact
  EXPECT_EQ(format_profile_csv(q), text);
}

TEST(ProfileCsv, RoundTripsWithStats) {
  Profile p(1, 1, 3);
  p.set(1, 0, 0, 0.3, EntryStats{8, 0.2, 0.05, 0.1, 0.3});
  p.set(1, 0, 1, 0.123456789012345, EntryStats{1, 0.123456789012345, 0, 0.123456789012345, 0.123456789012345});
  p.set(1, 0, 2, 0.5);  // no statistics for this one
  EXPECT_TRUE(p.has_stats());
  const std::string text = format_profile_csv(p);
  EXPECT_EQ(text.rfind(kStatsHeader, 0), 0u) << text;
  EXPECT_NE(text.find("\n1,0,0,0.3,8,0.2,0.05,0.1,0.3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n1,0,2,0.5,0,0.0,0.0,0.0,0.0\n"), std::string::npos) << text;
  const Profile q = parse_profile_csv(text);
  ASSERT_TRUE(q.complete());
  EXPECT_TRUE(q.has_stats());
  const EntryStats s0 = *q.stats(1, 0, 0);
  EXPECT_EQ(s0.count, 8);
  EXPECT_EQ(s0.mean, 0.2);
  EXPECT_EQ(s0.std, 0.05);
  EXPECT_EQ(s0.min, 0.1);
  EXPECT_EQ(s0.max, 0.3);
  EXPECT_EQ(q.density(1, 0, 1), 0.123456789012345);
  EXPECT_EQ(q.stats(1, 0, 1)->max, 0.123456789012345);
  EXPECT_EQ(q.stats(1, 0, 2)->count, 0);
  EXPECT_EQ(format_profile_csv(q), text);
}

TEST(ProfileCsv, SetRejectsBadArguments) {
  Profile p(2, 2, 2);
  auto kind_of = [&](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::unsupported;  // "did not throw"
  };
  EXPECT_EQ(kind_of([&] { p.set(0, 0, 0, 0.5); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { p.set(3, 0, 0, 0.5); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { p.set(1, 2, 0, 0.5); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { p.set(1, 0, -1, 0.5); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { p.set(1, 0, 0, NAN); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { p.set(1, 0, 0, 1.0001); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { p.set(1, 0, 0, 0.5, EntryStats{-1}); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { p.set(1, 0, 0, 0.5, EntryStats{0, 0.5}); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { Profile(-1, 2, 2); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([&] { Profile(10000, 1000, 1000); }), ErrorKind::invalid_argument);
  EXPECT_EQ(p.size(), 0);
  EXPECT_EQ(p.mean_density(), 0.0);
}

TEST(ProfileCsv, RejectsMissingOrWrongHeader) {
  expect_format_error("", 1, "empty file");
  expect_format_error("1,0,0,0.5\n", 1, "expected the header");
  expect_format_error("Step,Layer,Head,Density\n1,0,0,0.5\n", 1, "found 'Step,Layer,Head,Density'");
  expect_format_error("step,layer,head,sparsity\n1,0,0,0.5\n", 1, "expected the header");
  expect_format_error("Step,Layer,Head,Sparsity \n1,0,0,0.5\n", 1, "expected the header");
  expect_format_error("Step,Layer,Head,Sparsity,Count\n1,0,0,0.5,1\n", 1, "expected the header");
  expect_format_error("\xEF\xBB\xBFStep,Layer,Head,Sparsity\n1,0,0,0.5\n", 1, "expected the header");
}

TEST(ProfileCsv, RejectsFilesWithoutEntries) {
  expect_format_error("Step,Layer,Head,Sparsity", 1, "no entries");
  expect_format_error(kHeader, 1, "no entries");
  expect_format_error(std::string(kHeader) + "\n", 2, "empty line");
  expect_format_error(std::string(kHeader) + "1,0,0,0.5\n\n1,0,1,0.5\n", 3, "empty line");
}

TEST(ProfileCsv, RejectsWrongColumnCount) {
  expect_format_error(std::string(kHeader) + "1,0,0\n", 2, "expected 4 columns, found 3");
  expect_format_error(std::string(kHeader) + "1,0,0,0.5\n1,0,1,0.5,\n", 3, "expected 4 columns, found 5");
  expect_format_error(std::string(kStatsHeader) + "1,0,0,0.5\n", 2, "expected 9 columns, found 4");
}

TEST(ProfileCsv, RejectsBadIndices) {
  const std::string h = kHeader;
  expect_format_error(h + "x,0,0,0.5\n", 2, "Step must be an integer, found 'x'");
  expect_format_error(h + "1.0,0,0,0.5\n", 2, "Step must be an integer, found '1.0'");
  expect_format_error(h + " 1,0,0,0.5\n", 2, "Step must be an integer");
  expect_format_error(h + "+1,0,0,0.5\n", 2, "Step must be an integer");
  expect_format_error(h + ",0,0,0.5\n", 2, "Step must be an integer, found ''");
  expect_format_error(h + "0,0,0,0.5\n", 2, "Step must be in [1, 10000], found '0'");
  expect_format_error(h + "10001,0,0,0.5\n", 2, "Step must be in [1, 10000]");
  expect_format_error(h + "99999999999999999999999,0,0,0.5\n", 2, "Step must be in [1, 10000]");
  expect_format_error(h + "1,-1,0,0.5\n", 2, "Layer must be in [0, 999], found '-1'");
  expect_format_error(h + "1,1000,0,0.5\n", 2, "Layer must be in [0, 999]");
  expect_format_error(h + "1,0,1000,0.5\n", 2, "Head must be in [0, 999]");
  expect_format_error(h + "1,0,0x1,0.5\n", 2, "Head must be an integer, found '0x1'");
}

TEST(ProfileCsv, RejectsBadDensities) {
  const std::string h = kHeader;
  expect_format_error(h + "1,0,0,abc\n", 2, "Sparsity (density) must be a finite number, found 'abc'");
  expect_format_error(h + "1,0,0,\n", 2, "Sparsity (density) must be a finite number, found ''");
  expect_format_error(h + "1,0,0,nan\n", 2, "must be a finite number, found 'nan'");
  expect_format_error(h + "1,0,0,NaN\n", 2, "must be a finite number");
  expect_format_error(h + "1,0,0,inf\n", 2, "must be a finite number, found 'inf'");
  expect_format_error(h + "1,0,0,-infinity\n", 2, "must be a finite number");
  expect_format_error(h + "1,0,0,1e999\n", 2, "must be a finite number");
  expect_format_error(h + "1,0,0,0.5x\n", 2, "must be a finite number, found '0.5x'");
  expect_format_error(h + "1,0,0,1.5\n", 2, "must be in [0, 1], found '1.5'");
  expect_format_error(h + "1,0,0,0.5\n1,0,1,-0.01\n", 3, "must be in [0, 1], found '-0.01'");
}

TEST(ProfileCsv, RejectsBadStats) {
  const std::string h = kStatsHeader;
  expect_format_error(h + "1,0,0,0.5,-1,0,0,0,0\n", 2, "Count must be in [0, 2147483647], found '-1'");
  expect_format_error(h + "1,0,0,0.5,1.5,0,0,0,0\n", 2, "Count must be an integer");
  expect_format_error(h + "1,0,0,0.5,3,0.5,-0.1,0.4,0.6\n", 2, "Std must be >= 0");
  expect_format_error(h + "1,0,0,0.5,3,nan,0,0,0\n", 2, "Mean must be a finite number");
  expect_format_error(h + "1,0,0,0.5,3,0.5,0.1,0.4,inf\n", 2, "Max must be a finite number");
  expect_format_error(h + "1,0,0,0.5,0,0.5,0,0,0\n", 2, "Count is 0");
}

TEST(ProfileCsv, RejectsDuplicates) {
  expect_format_error(std::string(kHeader) + "1,0,0,0.5\n1,0,1,0.5\n1,0,0,0.25\n", 4,
                      "duplicate entry for step 1, layer 0, head 0");
}

TEST(ProfileCsv, RejectsGridPastTheEntryLimitBeforeAllocating) {
  // Each index is within its own limit, but together they ask for 10^10 entries.
  expect_format_error(std::string(kHeader) + "1,0,0,0.5\n10000,399,0,0.5\n10000,399,999,0.5\n", 4,
                      "more than the 4000000 allowed");
}

TEST(ProfileCsv, SaveAndLoadFiles) {
  TempDir dir;
  Profile p(2, 1, 1);
  p.set(1, 0, 0, 0.25);
  p.set(2, 0, 0, 0.0625);
  const std::string path = (dir.path / "p.csv").string();
  save_profile_csv(path, p);
  const Profile q = load_profile_csv(path);
  EXPECT_EQ(q.density(2, 0, 0), 0.0625);

  // Format errors from a file name the path as the source.
  std::ofstream(dir.path / "bad.csv") << kHeader << "1,0,0,2\n";
  try {
    load_profile_csv((dir.path / "bad.csv").string());
    ADD_FAILURE() << "loaded a bad file";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    EXPECT_NE(std::string(e.what()).find("bad.csv:2: "), std::string::npos) << e.what();
  }
}

TEST(ProfileCsv, LoadReportsIoErrorsAndRefusesHugeFiles) {
  TempDir dir;
  const std::string missing = (dir.path / "missing.csv").string();
  try {
    load_profile_csv(missing);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
  try {
    load_profile_csv(dir.path.string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("directory"), std::string::npos) << e.what();
  }
  // A sparse file just over 1 GiB: refused from its size, without reading it.
  const fs::path huge = dir.path / "huge.csv";
  std::ofstream(huge).put('S');
  fs::resize_file(huge, (std::uintmax_t{1} << 30) + 1);
  try {
    load_profile_csv(huge.string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    EXPECT_NE(std::string(e.what()).find("more than the 1073741824"), std::string::npos) << e.what();
  }
  try {
    save_profile_csv((dir.path / "no" / "such" / "dir.csv").string(), Profile(1, 1, 1));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("dir.csv"), std::string::npos) << e.what();
  }
}

struct Reference {
  const char* file;
  int steps, layers, heads;
  double mean;
};

void PrintTo(const Reference& r, std::ostream* os) { *os << r.file; }

class ReferenceProfile : public ::testing::TestWithParam<Reference> {};

TEST_P(ReferenceProfile, LoadsWithDocumentedShapeAndMean) {
  const fs::path dir = SVOO_REFERENCE_PROFILES;
  if (!fs::is_directory(dir)) GTEST_SKIP() << "no reference profiles at " << dir;
  const Reference& r = GetParam();
  const fs::path path = dir / r.file;
  const Profile p = load_profile_csv(path.string());
  EXPECT_EQ(p.steps(), r.steps);
  EXPECT_EQ(p.layers(), r.layers);
  EXPECT_EQ(p.heads(), r.heads);
  EXPECT_TRUE(p.complete());
  EXPECT_FALSE(p.has_stats());
  EXPECT_NEAR(p.mean_density(), r.mean, 0.0005);
  // Written back, the file is the same text up to line endings (CRLF there, LF here).
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string original = ss.str();
  std::erase(original, '\r');
  EXPECT_TRUE(format_profile_csv(p) == original);
}

INSTANTIATE_TEST_SUITE_P(
    Shared, ReferenceProfile,
    ::testing::Values(Reference{"sparsity_wan_1.3B_t2v.csv", 50, 30, 12, 0.144},
                      Reference{"sparsity_wan_14B_t2v.csv", 50, 40, 40, 0.247},
                      Reference{"sparsity_wan_14B_i2v.csv", 40, 40, 40, 0.214},
                      Reference{"sparsity_wan22_A14B_t2v.csv", 40, 40, 40, 0.243},
                      Reference{"sparsity_wan22_A14B_i2v.csv", 40, 40, 40, 0.202},
                      Reference{"sparsity_hunyuan10_13B_t2v.csv", 50, 60, 24, 0.155},
                      Reference{"sparsity_hunyuan10_13B_i2v.csv", 50, 60, 24, 0.165}),
    [](const auto& info) {
      std::string name = info.param.file;
      name = name.substr(9, name.size() - 13);  // strip "sparsity_" and ".csv"
      for (char& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return name;
    });

}  // namespace
}  // namespace svoo
