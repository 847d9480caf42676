#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "svoo/error.hpp"
#include "svoo/safetensors.hpp"

namespace svoo {
namespace {

namespace fs = std::filesystem;

// A file image: 8-byte little-endian length of `header`, `header`, then `data`.
std::vector<std::byte> image(const std::string& header, const std::vector<std::uint8_t>& data = {},
                             std::uint64_t length_field = ~std::uint64_t{0}) {
  const std::uint64_t n = length_field == ~std::uint64_t{0} ? header.size() : length_field;
  std::vector<std::byte> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xff));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  for (std::uint8_t b : data) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::vector<std::uint8_t> zeros(std::size_t n) { return std::vector<std::uint8_t>(n, 0); }

void expect_format_error(const std::vector<std::byte>& bytes, const std::string& what) {
  try {
    parse_safetensors(bytes);
    ADD_FAILURE() << "parsed without error, expected: " << what;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

// One tensor entry `"name":{...}` for hand-written headers.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("svoo_safetensors_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

TEST(Safetensors, ParsesAHandWrittenFile) {
  // f32 [1.0, -2.5] then bf16 [1.0, 0.15625] (0x3F80, 0x3E20), little-endian.
  const auto bytes = image("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "BF16", "[2,1]", "[8,12]") +
                               ",\"__metadata__\":{\"format\":\"pt\"}}  ",
                           {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0, 0x80, 0x3F, 0x20, 0x3E});
  const SafetensorsFile f = parse_safetensors(bytes);
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].first, "a");  // header order kept
  EXPECT_EQ(f.tensors[1].first, "b");
  const HostTensor& a = f.at("a");
  EXPECT_EQ(a.dtype(), DType::f32);
  EXPECT_EQ(a.shape(), (std::vector<std::int64_t>{2}));
  EXPECT_EQ(a.get(0), 1.0f);
  EXPECT_EQ(a.get(1), -2.5f);
  const HostTensor& b = f.at("b");
  EXPECT_EQ(b.dtype(), DType::bf16);
  EXPECT_EQ(b.shape(), (std::vector<std::int64_t>{2, 1}));
  EXPECT_EQ(b.get(0), 1.0f);
  EXPECT_EQ(b.get(1), 0.15625f);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.find("c"), nullptr);
}

TEST(Safetensors, KeepsHeaderOrderEvenWhenDataIsInAnotherOrder) {
  const auto bytes = image("{" + entry("z", "I32", "[1]", "[4,8]") + "," + entry("a", "I32", "[1]", "[0,4]") + "}",
                           {1, 0, 0, 0, 2, 0, 0, 0});
  const SafetensorsFile f = parse_safetensors(bytes);
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].first, "z");
  EXPECT_EQ(f.tensors[0].second.data<std::int32_t>()[0], 2);
  EXPECT_EQ(f.tensors[1].second.data<std::int32_t>()[0], 1);
}

TEST(Safetensors, RoundTripsAllDtypesShapesAndMetadata) {
  SafetensorsFile f;
  HostTensor t32(DType::f32, {2, 3});
  for (int i = 0; i < 6; ++i) t32.set(i, 0.1f * static_cast<float>(i) - 0.25f);
  HostTensor t16(DType::f16, {3});
  t16.set(0, 1.0f), t16.set(1, -0.000244140625f), t16.set(2, 65504.0f);
  HostTensor tb(DType::bf16, {1, 1, 1, 1, 2});  // rank 5: files may hold more than views do
  tb.set(0, 3.140625f), tb.set(1, -1.5e30f);
  HostTensor ti32(DType::i32, {2});
  ti32.data<std::int32_t>()[0] = -7, ti32.data<std::int32_t>()[1] = 2147483647;
  HostTensor ti64(DType::i64, {});  // a scalar
  ti64.data<std::int64_t>()[0] = std::int64_t{1} << 40;
  HostTensor empty(DType::f32, {0, 5});
  f.tensors = {{"q", t32}, {"h", t16}, {"b", tb}, {"idx", ti32}, {"big", ti64}, {"none", empty}};
  f.metadata = {{"format", "pt"}, {"note", "caf\xc3\xa9"}};

  const std::vector<std::byte> bytes = serialize_safetensors(f);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header padded to 8 bytes";
  EXPECT_EQ(bytes.size(), 8 + n + 24 + 6 + 4 + 8 + 8 + 0);

  const SafetensorsFile g = parse_safetensors(bytes);
  ASSERT_EQ(g.tensors.size(), f.tensors.size());
  for (std::size_t i = 0; i < f.tensors.size(); ++i) {
    EXPECT_EQ(g.tensors[i].first, f.tensors[i].first);
    const HostTensor& x = f.tensors[i].second;
    const HostTensor& y = g.tensors[i].second;
    EXPECT_EQ(y.dtype(), x.dtype());
    EXPECT_EQ(y.shape(), x.shape());
    ASSERT_EQ(y.nbytes(), x.nbytes());
    EXPECT_EQ(std::memcmp(y.bytes(), x.bytes(), x.nbytes()), 0) << f.tensors[i].first;
  }
  EXPECT_EQ(g.metadata, f.metadata);
  // Values, not just bytes: the conversions on both sides agree.
  EXPECT_EQ(g.at("b").get(0), 3.140625f);
  EXPECT_EQ(g.at("b").get(1), bf16_to_float(float_to_bf16(-1.5e30f)));
  EXPECT_EQ(g.at("h").get(1), -0.000244140625f);
  EXPECT_EQ(g.at("h").get(2), 65504.0f);
  EXPECT_FLOAT_EQ(g.at("q").get(5), 0.25f);
  EXPECT_EQ(g.at("idx").data<std::int32_t>()[1], 2147483647);
  EXPECT_EQ(g.at("big").data<std::int64_t>()[0], std::int64_t{1} << 40);
  EXPECT_EQ(g.at("big").shape().size(), 0u);
  EXPECT_EQ(g.at("none").numel(), 0);
  EXPECT_EQ(serialize_safetensors(g), bytes);
}

TEST(Safetensors, EmptyFile) {
  const SafetensorsFile f = parse_safetensors(image("{}"));
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_TRUE(f.metadata.empty());
  const auto bytes = serialize_safetensors(SafetensorsFile{});
  EXPECT_EQ(bytes.size(), 16u);  // "{}" padded to 8
  EXPECT_TRUE(parse_safetensors(bytes).tensors.empty());
  expect_format_error(image("{}", zeros(8)), "trailing bytes belong to no tensor");
}

TEST(Safetensors, RejectsBadLengthsAndJson) {
  expect_format_error({}, "fewer than the 8-byte header length");
  expect_format_error(std::vector<std::byte>(7), "7 bytes, fewer than the 8-byte");
  expect_format_error(image("{}", {}, kMaxSafetensorsHeader + 1), "past the limit");
  expect_format_error(image("{}", {}, 3), "runs past the end of the 10-byte file");
  expect_format_error(image(""), "not valid JSON");
  expect_format_error(image("{\"a\":"), "not valid JSON");
  expect_format_error(image("{} x"), "not valid JSON");
  expect_format_error(image("{\"\xff\":{}}"), "not UTF-8");
  // nlohmann treats NUL as the end of input: the garbage after it must not be ignored (fuzzer find).
  expect_format_error(image(std::string("{}\0garbage", 10)), "NUL byte at offset 2");
  expect_format_error(image("[]"), "not a JSON object");
  expect_format_error(image("\"x\""), "not a JSON object");
  expect_format_error(image("{\"__metadata__\":" + std::string(30, '[') + std::string(30, ']') + "}"),
                      "nests deeper than 16");
}

TEST(Safetensors, RejectsDuplicateKeys) {
  expect_format_error(image("{" + entry("a", "F32", "[1]", "[0,4]") + "," + entry("a", "F32", "[1]", "[4,8]") + "}",
                            zeros(8)),
                      "duplicate key 'a'");
  expect_format_error(image("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                            zeros(4)),
                      "duplicate key 'dtype'");
  expect_format_error(image("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"), "duplicate key 'k'");
}

TEST(Safetensors, RejectsBadEntries) {
  expect_format_error(image("{\"a\":[]}"), "tensor 'a': entry is not an object");
  expect_format_error(image("{" + entry("", "F32", "[0]", "[0,0]") + "}"), "empty name");
  expect_format_error(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[0]}}"), "needs the fields dtype, shape and data_offsets");
  expect_format_error(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":1}}"),
                      "tensor 'a': unknown field 'x'");
  expect_format_error(image("{" + entry("w", "F64", "[1]", "[0,8]") + "}", zeros(8)),
                      "tensor 'w': unsupported dtype 'F64'");
  expect_format_error(image("{" + entry("w", "U8", "[1]", "[0,1]") + "}", zeros(1)), "unsupported dtype 'U8'");
  expect_format_error(image("{\"a\":{\"dtype\":1,\"shape\":[0],\"data_offsets\":[0,0]}}"), "dtype is not a string");
}

TEST(Safetensors, RejectsBadShapes) {
  expect_format_error(image("{" + entry("a", "F32", "[-1]", "[0,0]") + "}"), "non-negative integers, found '-1'");
  expect_format_error(image("{" + entry("a", "F32", "[1.5]", "[0,4]") + "}"), "non-negative integers, found '1.5'");
  expect_format_error(image("{" + entry("a", "F32", "[1.0]", "[0,4]") + "}"), "non-negative integers");
  expect_format_error(image("{" + entry("a", "F32", "[\"1\"]", "[0,4]") + "}"), "non-negative integers");
  expect_format_error(image("{" + entry("a", "F32", "[18446744073709551615]", "[0,0]") + "}"),
                      "non-negative integers");
  expect_format_error(image("{" + entry("a", "F32", "3", "[0,12]") + "}"), "shape is not an array");
  expect_format_error(image("{" + entry("a", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") + "}"),
                      "shape has rank 9, more than 8");
  expect_format_error(image("{" + entry("a", "F32", "[4611686018427387904,4]", "[0,0]") + "}"),
                      "has too many elements");
  // numel fits in int64 but bytes do not.
  expect_format_error(image("{" + entry("a", "I64", "[4611686018427387904]", "[0,0]") + "}"), "too many bytes");
  // A zero extent first keeps every running product at 0: valid, and no overflow.
  const auto f = parse_safetensors(image("{" + entry("a", "F32", "[0,4611686018427387904,4]", "[0,0]") + "}"));
  EXPECT_EQ(f.at("a").numel(), 0);
}

TEST(Safetensors, RejectsBadOffsets) {
  expect_format_error(image("{" + entry("a", "F32", "[1]", "4") + "}", zeros(4)), "data_offsets must be [begin, end]");
  expect_format_error(image("{" + entry("a", "F32", "[1]", "[0,4,8]") + "}", zeros(4)), "data_offsets must be");
  expect_format_error(image("{" + entry("a", "F32", "[1]", "[-4,0]") + "}", zeros(4)), "data_offsets must be");
  expect_format_error(image("{" + entry("a", "F32", "[1]", "[0.0,4]") + "}", zeros(4)), "data_offsets must be");
  expect_format_error(image("{" + entry("a", "F32", "[0]", "[4,0]") + "}", zeros(4)), "end before they begin");
  expect_format_error(image("{" + entry("a", "F32", "[2]", "[0,8]") + "}", zeros(4)),
                      "run past the data buffer of 4 bytes");
  expect_format_error(image("{" + entry("a", "F32", "[2]", "[0,4]") + "}", zeros(4)),
                      "span 4 bytes, but F32 [2] needs 8");
  expect_format_error(image("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[1]", "[4,8]") + "}",
                            zeros(8)),
                      "tensor 'b' at bytes [4, 8) overlaps");
  expect_format_error(image("{" + entry("a", "F32", "[1]", "[0,4]") + "," + entry("b", "F32", "[1]", "[8,12]") + "}",
                            zeros(12)),
                      "bytes [4, 8) of the data buffer belong to no tensor");
  expect_format_error(image("{" + entry("a", "F32", "[1]", "[4,8]") + "}", zeros(8)), "bytes [0, 4)");
  expect_format_error(image("{" + entry("a", "F32", "[1]", "[0,4]") + "}", zeros(6)),
                      "has 6 bytes but the tensors end at byte 4");
}

TEST(Safetensors, RejectsBadMetadata) {
  expect_format_error(image("{\"__metadata__\":[]}"), "__metadata__ is not an object");
  expect_format_error(image("{\"__metadata__\":{\"n\":1}}"), "__metadata__ value of 'n' is not a string");
}

TEST(Safetensors, SerializeRejectsBadNames) {
  auto kind_and_message = [](const SafetensorsFile& f) -> std::pair<ErrorKind, std::string> {
    try {
      serialize_safetensors(f);
    } catch (const Error& e) {
      return {e.kind(), e.what()};
    }
    return {ErrorKind::unsupported, "no error"};
  };
  SafetensorsFile f;
  f.tensors = {{"a", HostTensor(DType::f32, {1})}, {"a", HostTensor(DType::f32, {1})}};
  auto [k1, m1] = kind_and_message(f);
  EXPECT_EQ(k1, ErrorKind::invalid_argument);
  EXPECT_NE(m1.find("duplicate tensor 'a'"), std::string::npos) << m1;
  f.tensors = {{"", HostTensor(DType::f32, {1})}};
  auto [k2, m2] = kind_and_message(f);
  EXPECT_EQ(k2, ErrorKind::invalid_argument);
  EXPECT_NE(m2.find("empty name"), std::string::npos) << m2;
  f.tensors = {{"__metadata__", HostTensor(DType::f32, {1})}};
  EXPECT_EQ(kind_and_message(f).first, ErrorKind::invalid_argument);
  f.tensors = {{"x", HostTensor(DType::f32, std::vector<std::int64_t>(9, 1))}};
  auto [k4, m4] = kind_and_message(f);
  EXPECT_EQ(k4, ErrorKind::invalid_argument);
  EXPECT_NE(m4.find("rank 9"), std::string::npos) << m4;
  f.tensors.clear();
  f.metadata = {{"k", "\xff"}};
  auto [k5, m5] = kind_and_message(f);
  EXPECT_EQ(k5, ErrorKind::invalid_argument);
  EXPECT_NE(m5.find("cannot write the header"), std::string::npos) << m5;
}

TEST(Safetensors, AtNamesTheMissingTensorAndThosePresent) {
  SafetensorsFile f;
  f.tensors = {{"q", HostTensor(DType::f32, {1})}, {"k", HostTensor(DType::f32, {1})}};
  try {
    f.at("v");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("no tensor named 'v'; the file has 'q', 'k'"), std::string::npos)
        << e.what();
  }
}

TEST(Safetensors, SaveLoadAndFileErrors) {
  TempDir dir;
  SafetensorsFile f;
  f.tensors = {{"x", HostTensor(DType::i64, {3})}};
  f.tensors[0].second.data<std::int64_t>()[2] = -5;
  const std::string path = (dir.path / "x.safetensors").string();
  save_safetensors(path, f);
  EXPECT_EQ(load_safetensors(path).at("x").data<std::int64_t>()[2], -5);

  const std::string missing = (dir.path / "missing.safetensors").string();
  try {
    load_safetensors(missing);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
  std::ofstream(dir.path / "bad.safetensors") << "short";
  try {
    load_safetensors((dir.path / "bad.safetensors").string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors': safetensors: the file has 5 bytes"), std::string::npos) << msg;
  }
  try {
    save_safetensors((dir.path / "no" / "x.safetensors").string(), f);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
  }
}

}  // namespace
}  // namespace svoo
