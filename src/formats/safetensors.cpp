// The safetensors format: u64 little-endian header length, a JSON header, then the data buffer.
// The parser reads untrusted files: every size and offset is checked before it is used, the data
// buffer must be tiled exactly by the tensors, and JSON keys must be unique (nlohmann keeps the
// last of a duplicated key silently, so duplicates are caught with a parser callback).
#include "svoo/safetensors.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "formats/file_io.hpp"
#include "svoo/error.hpp"

namespace svoo {
namespace {

using Json = nlohmann::ordered_json;  // keeps the header's key order: tensors stay in file order

constexpr std::size_t kMaxParsedRank = 8;
constexpr std::size_t kMaxJsonDepth = 16;  // a valid header nests 3 deep; refuse pathological input
constexpr std::string_view kMetadataKey = "__metadata__";

[[noreturn]] void bad(const std::string& what) { fail(ErrorKind::format, "safetensors: " + what); }

// A name for a message: quoted, bounded, control bytes shown as '?'.
std::string name_for_message(std::string_view s) {
  constexpr std::size_t kMax = 64;
  std::string out = "'";
  for (char c : s.substr(0, kMax)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  if (s.size() > kMax) out += "...";
  return out + "'";
}

bool dtype_from_name(std::string_view s, DType& out) {
  static constexpr std::pair<std::string_view, DType> kNames[] = {
      {"F32", DType::f32}, {"F16", DType::f16}, {"BF16", DType::bf16}, {"I32", DType::i32}, {"I64", DType::i64}};
  for (const auto& [name, dtype] : kNames)
    if (s == name) {
      out = dtype;
      return true;
    }
  return false;
}

const char* dtype_file_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
  }
  return "?";
}

// Parses the header text, refusing duplicate keys in any object and excessive nesting.
Json parse_header(const char* text, std::size_t size) {
  // nlohmann stops at a NUL byte as if the input ended there, which would silently ignore the
  // rest of the header; a NUL is never valid JSON (not even inside a string), so refuse it.
  if (const void* nul = std::memchr(text, 0, size))
    bad("the header has a NUL byte at offset " + std::to_string(static_cast<const char*>(nul) - text));
  std::vector<std::set<std::string>> open_objects;  // keys seen so far, one set per open object
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        // Arrays push an empty set too, so that object_end/array_end pop symmetrically.
        open_objects.emplace_back();
        if (open_objects.size() > kMaxJsonDepth)
          bad("header nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        open_objects.pop_back();
        break;
      case Json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!open_objects.back().insert(key).second) bad("duplicate key " + name_for_message(key) + " in the header");
        break;
      }
      case Json::parse_event_t::value: break;
    }
    return true;
  };
  try {
    return Json::parse(text, text + size, callback);
  } catch (const nlohmann::json::exception& e) {
    // nlohmann quotes the last token read, which may be huge: keep the message bounded.
    constexpr std::size_t kMaxMessage = 300;
    std::string what = e.what();
    if (what.size() > kMaxMessage) what = what.substr(0, kMaxMessage) + "...";
    bad("the header is not valid JSON (or not UTF-8): " + what);
  }
}

std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

// A non-negative JSON integer no larger than `max`; false for floats, negatives, other types.
bool get_uint(const Json& j, std::uint64_t max, std::uint64_t& out) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<std::int64_t>() >= 0)) return false;
  out = j.get<std::uint64_t>();
  return out <= max;
}

struct Entry {
  std::size_t index;  // position in the file's tensor list
  std::uint64_t begin, end;
};

// Reads one tensor's header entry: dtype, shape (checked for overflow) and data offsets.
Entry parse_entry(const std::string& name, const Json& j, std::uint64_t buffer_size, HostTensor& tensor,
                  std::size_t index) {
  const std::string who = "tensor " + name_for_message(name);
  if (name.empty()) bad("a tensor has an empty name");
  if (!j.is_object()) bad(who + ": entry is not an object");
  for (const auto& [key, value] : j.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets") bad(who + ": unknown field " + name_for_message(key));
  if (!j.contains("dtype") || !j.contains("shape") || !j.contains("data_offsets"))
    bad(who + ": needs the fields dtype, shape and data_offsets");

  const Json& jd = j["dtype"];
  DType dtype{};
  if (!jd.is_string()) bad(who + ": dtype is not a string");
  if (!dtype_from_name(jd.get_ref<const std::string&>(), dtype))
    bad(who + ": unsupported dtype " + name_for_message(jd.get_ref<const std::string&>()) +
        " (supported: F32, F16, BF16, I32, I64)");

  const Json& js = j["shape"];
  if (!js.is_array()) bad(who + ": shape is not an array");
  if (js.size() > kMaxParsedRank)
    bad(who + ": shape has rank " + std::to_string(js.size()) + ", more than " + std::to_string(kMaxParsedRank));
  std::vector<std::int64_t> shape;
  std::int64_t numel = 1;
  for (const Json& e : js) {
    std::uint64_t extent = 0;
    if (!get_uint(e, std::numeric_limits<std::int64_t>::max(), extent))
      bad(who + ": shape entries must be non-negative integers, found " + name_for_message(e.dump()));
    // The running product must not overflow: HostTensor::numel multiplies in the same order.
    if (__builtin_mul_overflow(numel, static_cast<std::int64_t>(extent), &numel))
      bad(who + ": shape " + name_for_message(js.dump()) + " has too many elements");
    shape.push_back(static_cast<std::int64_t>(extent));
  }
  std::uint64_t nbytes = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel), dtype_size(dtype), &nbytes))
    bad(who + ": shape " + name_for_message(js.dump()) + " has too many bytes");

  const Json& jo = j["data_offsets"];
  std::uint64_t begin = 0, end = 0;
  if (!jo.is_array() || jo.size() != 2 || !get_uint(jo[0], std::numeric_limits<std::uint64_t>::max(), begin) ||
      !get_uint(jo[1], std::numeric_limits<std::uint64_t>::max(), end))
    bad(who + ": data_offsets must be [begin, end] with non-negative integers, found " + name_for_message(jo.dump()));
  if (end < begin) bad(who + ": data_offsets " + name_for_message(jo.dump()) + " end before they begin");
  if (end > buffer_size)
    bad(who + ": data_offsets " + name_for_message(jo.dump()) + " run past the data buffer of " +
        std::to_string(buffer_size) + " bytes");
  if (end - begin != nbytes)
    bad(who + ": data_offsets " + name_for_message(jo.dump()) + " span " + std::to_string(end - begin) + " bytes, but " +
        jd.get_ref<const std::string&>() + " " + js.dump() + " needs " + std::to_string(nbytes));

  tensor = HostTensor(dtype, std::move(shape));  // allocation bounded by the buffer size checked above
  return Entry{index, begin, end};
}

}  // namespace

const HostTensor* SafetensorsFile::find(const std::string& name) const noexcept {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

const HostTensor& SafetensorsFile::at(const std::string& name) const {
  if (const HostTensor* t = find(name)) return *t;
  std::string present;
  constexpr std::size_t kListed = 20;
  for (std::size_t i = 0; i < tensors.size() && i < kListed; ++i) present += (i ? ", " : "") + name_for_message(tensors[i].first);
  if (tensors.size() > kListed) present += ", ... (" + std::to_string(tensors.size()) + " in all)";
  fail(ErrorKind::invalid_argument,
       "no tensor named " + name_for_message(name) + "; the file has " + (present.empty() ? "none" : present));
}

SafetensorsFile parse_safetensors(std::span<const std::byte> bytes) {
  if (bytes.size() < 8)
    bad("the file has " + std::to_string(bytes.size()) + " bytes, fewer than the 8-byte header length");
  const std::uint64_t header_size = read_u64_le(bytes.data());
  if (header_size > kMaxSafetensorsHeader)
    bad("header length " + std::to_string(header_size) + " is past the limit of " +
        std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (header_size > bytes.size() - 8)
    bad("header length " + std::to_string(header_size) + " runs past the end of the " +
        std::to_string(bytes.size()) + "-byte file");
  const Json header = parse_header(reinterpret_cast<const char*>(bytes.data() + 8), header_size);
  if (!header.is_object()) bad("the header is not a JSON object");

  const std::span<const std::byte> buffer = bytes.subspan(8 + header_size);
  SafetensorsFile file;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) bad("__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) bad("__metadata__ value of " + name_for_message(mk) + " is not a string");
        file.metadata.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    file.tensors.emplace_back(key, HostTensor{});
    entries.push_back(parse_entry(key, value, buffer.size(), file.tensors.back().second, file.tensors.size() - 1));
  }

  // The tensors must tile the buffer exactly: sorted by offsets, each starts where the last ended.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  std::uint64_t covered = 0;
  for (const Entry& e : entries) {
    const std::string& name = file.tensors[e.index].first;
    if (e.begin < covered)
      bad("tensor " + name_for_message(name) + " at bytes [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
          ") overlaps the data before byte " + std::to_string(covered));
    if (e.begin > covered)
      bad("bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) +
          ") of the data buffer belong to no tensor (a hole before tensor " + name_for_message(name) + ")");
    covered = e.end;
  }
  if (covered != buffer.size())
    bad("the data buffer has " + std::to_string(buffer.size()) + " bytes but the tensors end at byte " +
        std::to_string(covered) + " (trailing bytes belong to no tensor)");

  for (const Entry& e : entries)
    if (e.end > e.begin) std::memcpy(file.tensors[e.index].second.bytes(), buffer.data() + e.begin, e.end - e.begin);
  return file;
}

SafetensorsFile load_safetensors(const std::string& path) {
  const std::vector<std::byte> bytes = detail::read_file(path, std::numeric_limits<std::size_t>::max());
  try {
    return parse_safetensors(bytes);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::format) throw;
    // Say which file was corrupt; drop the "svoo: format error: " prefix Error adds to what().
    const std::string prefix = std::string("svoo: ") + to_string(e.kind()) + ": ";
    std::string_view what = e.what();
    if (what.starts_with(prefix)) what.remove_prefix(prefix.size());
    fail(ErrorKind::format, "'" + path + "': " + std::string(what));
  }
}

std::vector<std::byte> serialize_safetensors(const SafetensorsFile& file) {
  Json header = Json::object();
  if (!file.metadata.empty()) {
    Json& meta = header[std::string(kMetadataKey)] = Json::object();
    for (const auto& [k, v] : file.metadata) meta[k] = v;
  }
  std::set<std::string_view> names;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    require(!name.empty(), ErrorKind::invalid_argument, "safetensors: a tensor has an empty name");
    require(name != kMetadataKey, ErrorKind::invalid_argument, "safetensors: '__metadata__' is not a tensor name");
    require(names.insert(name).second, ErrorKind::invalid_argument, "safetensors: duplicate tensor " + name_for_message(name));
    require(t.shape().size() <= kMaxParsedRank, ErrorKind::invalid_argument,
            "safetensors: tensor " + name_for_message(name) + " has rank " + std::to_string(t.shape().size()) +
                ", more than the " + std::to_string(kMaxParsedRank) + " the reader accepts");
    header[name] = Json{{"dtype", dtype_file_name(t.dtype())},
                        {"shape", t.shape()},
                        {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // strings that are not UTF-8
    fail(ErrorKind::invalid_argument, std::string("safetensors: cannot write the header: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data then starts 8-byte aligned
  require(text.size() <= kMaxSafetensorsHeader, ErrorKind::invalid_argument,
          "safetensors: the header would take " + std::to_string(text.size()) + " bytes, past the limit");

  std::vector<std::byte> out(8 + text.size() + offset);
  std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i, n >>= 8) out[i] = static_cast<std::byte>(n & 0xff);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::byte* data = out.data() + 8 + text.size();
  for (const auto& [name, t] : file.tensors) {
    if (t.nbytes()) std::memcpy(data, t.bytes(), t.nbytes());
    data += t.nbytes();
  }
  return out;
}

void save_safetensors(const std::string& path, const SafetensorsFile& file) {
  detail::write_file(path, serialize_safetensors(file));
}

}  // namespace svoo
