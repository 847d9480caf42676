// Replays the fuzzing regression corpus (tests/corpus/*): every input must either parse or be
// refused with svoo::Error; anything else (another exception, a crash) is a parser bug.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "svoo/error.hpp"
#include "svoo/profile.hpp"
#include "svoo/safetensors.hpp"

namespace svoo {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> corpus(const char* name) {
  std::vector<fs::path> files;
  const fs::path dir = fs::path(SVOO_SOURCE_DIR) / "tests" / "corpus" / name;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  return files;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Corpus, ProfileCsvInputsParseOrFailCleanly) {
  const auto files = corpus("profile_csv");
  ASSERT_GE(files.size(), 20u);
  int parsed = 0;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    const std::string text = read(f);
    try {
      const Profile p = parse_profile_csv(text, f.filename().string());
      EXPECT_GT(p.size(), 0);
      EXPECT_EQ(parse_profile_csv(format_profile_csv(p)).size(), p.size());
      ++parsed;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
    }
  }
  EXPECT_GE(parsed, 3);  // the valid seeds
}

TEST(Corpus, SafetensorsInputsParseOrFailCleanly) {
  const auto files = corpus("safetensors");
  ASSERT_GE(files.size(), 20u);
  int parsed = 0;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    const std::string text = read(f);
    try {
      const SafetensorsFile s = parse_safetensors(std::as_bytes(std::span(text.data(), text.size())));
      EXPECT_EQ(parse_safetensors(serialize_safetensors(s)).tensors.size(), s.tensors.size());
      ++parsed;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
    }
  }
  EXPECT_GE(parsed, 3);
}

}  // namespace
}  // namespace svoo
