// Profile storage and the CSV interchange format (spec section 1). The parser reads untrusted
// files: it is strict (exact header, exact column count, plain numbers parsed without locale)
// and checks the grid size against the limits before it allocates anything.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <system_error>

#include "formats/file_io.hpp"
#include "svoo/error.hpp"
#include "svoo/profile.hpp"

namespace svoo {
namespace {

constexpr double kAbsent = std::numeric_limits<double>::quiet_NaN();
constexpr std::string_view kHeader = "Step,Layer,Head,Sparsity";
constexpr std::string_view kStatsHeader = ",Count,Mean,Std,Min,Max";
constexpr std::size_t kMaxCsvBytes = std::size_t{1} << 30;  // 1 GiB

bool stats_valid(const EntryStats& s) {
  if (s.count < 0) return false;
  if (!std::isfinite(s.mean) || !std::isfinite(s.std) || !std::isfinite(s.min) || !std::isfinite(s.max))
    return false;
  if (s.std < 0) return false;
  // count == 0 means "unknown": carrying numbers then would be lost on a save/load round trip.
  if (s.count == 0 && (s.mean != 0 || s.std != 0 || s.min != 0 || s.max != 0)) return false;
  return true;
}

}  // namespace

Profile::Profile(int steps, int layers, int heads) {
  require(steps >= 0 && layers >= 0 && heads >= 0, ErrorKind::invalid_argument,
          "profile dimensions must be non-negative, got " + std::to_string(steps) + " x " +
              std::to_string(layers) + " x " + std::to_string(heads));
  const std::int64_t n = static_cast<std::int64_t>(steps) * layers * heads;
  require(n <= kMaxProfileEntries, ErrorKind::invalid_argument,
          "a profile holds at most " + std::to_string(kMaxProfileEntries) + " entries, " +
              std::to_string(steps) + " x " + std::to_string(layers) + " x " + std::to_string(heads) +
              " asked for " + std::to_string(n));
  steps_ = steps;
  layers_ = layers;
  heads_ = heads;
  density_.assign(static_cast<std::size_t>(n), kAbsent);
  // stats_ stays empty until an entry with statistics is set: most profiles carry none.
}

std::size_t Profile::index(int step, int layer, int head) const noexcept {
  return (static_cast<std::size_t>(step - 1) * layers_ + layer) * heads_ + head;
}

std::int64_t Profile::size() const noexcept {
  std::int64_t n = 0;
  for (double d : density_) n += !std::isnan(d);
  return n;
}

bool Profile::has_stats() const noexcept {
  for (const auto& s : stats_)
    if (s.count > 0) return true;
  return false;
}

void Profile::set(int step, int layer, int head, double density, const EntryStats& stats) {
  require(step >= 1 && step <= steps_ && layer >= 0 && layer < layers_ && head >= 0 && head < heads_,
          ErrorKind::invalid_argument,
          "profile entry (step " + std::to_string(step) + ", layer " + std::to_string(layer) + ", head " +
              std::to_string(head) + ") is outside the " + std::to_string(steps_) + " x " +
              std::to_string(layers_) + " x " + std::to_string(heads_) + " grid");
  require(density >= 0.0 && density <= 1.0, ErrorKind::invalid_argument,  // false for NaN
          "density must be in [0, 1], got " + std::to_string(density));
  require(stats_valid(stats), ErrorKind::invalid_argument,
          "entry statistics need count >= 0, finite values, std >= 0, and all zero when count is 0");
  const std::size_t i = index(step, layer, head);
  density_[i] = density + 0.0;  // -0.0 becomes +0.0, so formatting never writes "-0"
  if (stats.count > 0 && stats_.empty()) stats_.assign(density_.size(), EntryStats{});
  if (!stats_.empty()) stats_[i] = stats;
}

std::optional<double> Profile::density(int step, int layer, int head) const noexcept {
  if (step < 1 || step > steps_ || layer < 0 || layer >= layers_ || head < 0 || head >= heads_)
    return std::nullopt;
  const double d = density_[index(step, layer, head)];
  if (std::isnan(d)) return std::nullopt;
  return d;
}

std::optional<EntryStats> Profile::stats(int step, int layer, int head) const noexcept {
  if (!density(step, layer, head)) return std::nullopt;
  if (stats_.empty()) return EntryStats{};
  return stats_[index(step, layer, head)];
}

double Profile::mean_density() const noexcept {
  double sum = 0;
  std::int64_t n = 0;
  for (double d : density_) {
    if (std::isnan(d)) continue;
    sum += d;
    ++n;
  }
  return n ? sum / static_cast<double>(n) : 0.0;
}

// ---------------------------------------------------------------------------------------------
// Parsing

namespace {

struct Row {
  int step = 0, layer = 0, head = 0;
  double density = 0;
  EntryStats stats;
};

class CsvParser {
 public:
  CsvParser(std::string_view text, std::string_view source) : text_(text), source_(source) {}

  Profile parse() {
    std::string_view line;
    if (!next_line(line)) fail_at(1, "empty file (expected the header '" + std::string(kHeader) + "')");
    if (line == kHeader) {
      columns_ = 4;
    } else if (line.size() == kHeader.size() + kStatsHeader.size() && line.starts_with(kHeader) &&
               line.ends_with(kStatsHeader)) {
      columns_ = 9;
    } else {
      fail_at(1, "expected the header '" + std::string(kHeader) + "' (optionally followed by '" +
                     std::string(kStatsHeader) + "'), found '" + excerpt(line) + "'");
    }
    const std::size_t body = pos_;

    // Pass 1: validate every row and find the grid size, checking the limit as it grows.
    int steps = 0, layers = 0, heads = 0;
    while (next_line(line)) {
      const Row r = parse_row(line);
      steps = std::max(steps, r.step);
      layers = std::max(layers, r.layer + 1);
      heads = std::max(heads, r.head + 1);
      const std::int64_t n = static_cast<std::int64_t>(steps) * layers * heads;
      if (n > kMaxProfileEntries)
        fail_at(line_, "the grid " + std::to_string(steps) + " x " + std::to_string(layers) + " x " +
                           std::to_string(heads) + " has " + std::to_string(n) + " entries, more than the " +
                           std::to_string(kMaxProfileEntries) + " allowed");
    }
    if (line_ == 1) fail_at(1, "header but no entries");

    // Pass 2: fill the grid; rows are known to be valid, only duplicates remain to be found.
    Profile profile(steps, layers, heads);
    pos_ = body;
    line_ = 1;
    while (next_line(line)) {
      const Row r = parse_row(line);
      if (profile.density(r.step, r.layer, r.head))
        fail_at(line_, "duplicate entry for step " + std::to_string(r.step) + ", layer " +
                           std::to_string(r.layer) + ", head " + std::to_string(r.head));
      profile.set(r.step, r.layer, r.head, r.density, r.stats);
    }
    return profile;
  }

 private:
  // Next line without its "\n" or "\r\n"; false at the end. A final newline ends the last line
  // rather than starting an empty one.
  bool next_line(std::string_view& line) {
    if (pos_ >= text_.size()) return false;
    const std::size_t end = text_.find('\n', pos_);
    const std::size_t stop = end == std::string_view::npos ? text_.size() : end;
    line = text_.substr(pos_, stop - pos_);
    if (line.ends_with('\r')) line.remove_suffix(1);
    pos_ = end == std::string_view::npos ? text_.size() : end + 1;
    ++line_;
    return true;
  }

  Row parse_row(std::string_view line) {
    std::string_view f[9];
    int n = 0;
    for (std::size_t start = 0;; ++n) {
      const std::size_t comma = line.find(',', start);
      if (n < 9) f[n] = line.substr(start, comma == std::string_view::npos ? comma : comma - start);
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    ++n;
    if (line.empty()) fail_at(line_, "empty line");
    if (n != columns_)
      fail_at(line_, "expected " + std::to_string(columns_) + " columns, found " + std::to_string(n));
    Row r;
    r.step = parse_int(f[0], "Step", 1, kMaxProfileSteps);
    r.layer = parse_int(f[1], "Layer", 0, kMaxProfileLayers - 1);
    r.head = parse_int(f[2], "Head", 0, kMaxProfileHeads - 1);
    r.density = parse_double(f[3], "Sparsity (density)");
    if (!(r.density >= 0.0 && r.density <= 1.0))
      fail_at(line_, "Sparsity (density) must be in [0, 1], found '" + excerpt(f[3]) + "'");
    if (columns_ == 9) {
      r.stats.count = parse_int(f[4], "Count", 0, std::numeric_limits<std::int32_t>::max());
      r.stats.mean = parse_double(f[5], "Mean");
      r.stats.std = parse_double(f[6], "Std");
      r.stats.min = parse_double(f[7], "Min");
      r.stats.max = parse_double(f[8], "Max");
      if (r.stats.std < 0) fail_at(line_, "Std must be >= 0, found '" + excerpt(f[6]) + "'");
      if (!stats_valid(r.stats))
        fail_at(line_, "Count is 0 (statistics unknown) but Mean, Std, Min or Max is not 0");
    }
    return r;
  }

  int parse_int(std::string_view s, const char* column, int lo, int hi) {
    long long v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec == std::errc::invalid_argument || end != s.data() + s.size())
      fail_at(line_, std::string(column) + " must be an integer, found '" + excerpt(s) + "'");
    if (ec == std::errc::result_out_of_range || v < lo || v > hi)
      fail_at(line_, std::string(column) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                         "], found '" + excerpt(s) + "'");
    return static_cast<int>(v);
  }

  // A finite decimal number; from_chars would also accept "nan" and "inf", which are refused.
  double parse_double(std::string_view s, const char* column) {
    double v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v))
      fail_at(line_, std::string(column) + " must be a finite number, found '" + excerpt(s) + "'");
    return v;
  }

  // Field or line text for a message: bounded, and control bytes shown as '?'.
  static std::string excerpt(std::string_view s) {
    constexpr std::size_t kMax = 40;
    std::string out;
    for (char c : s.substr(0, kMax)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    if (s.size() > kMax) out += "...";
    return out;
  }

  [[noreturn]] void fail_at(std::int64_t line, const std::string& what) const {
    fail(ErrorKind::format, std::string(source_) + ":" + std::to_string(line) + ": " + what);
  }

  std::string_view text_, source_;
  std::size_t pos_ = 0;
  std::int64_t line_ = 0;  // 1-based number of the line last returned by next_line
  int columns_ = 4;
};

}  // namespace

Profile parse_profile_csv(std::string_view text, std::string_view source) {
  return CsvParser(text, source).parse();
}

Profile load_profile_csv(const std::string& path) {
  const std::vector<std::byte> bytes = detail::read_file(path, kMaxCsvBytes);
  return parse_profile_csv(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
}

// ---------------------------------------------------------------------------------------------
// Formatting

namespace {

// Shortest text that reads back as the same double, in plain decimal notation where that is
// reasonable and with ".0" on whole numbers, as Python writes floats: the 4-decimal reference
// files (written by pandas) come back as the same text, "0.0" and "0.0003" included.
void append_number(std::string& out, double v) {
  char buf[64];
  const double a = std::fabs(v);
  if (v == 0 || (a >= 1e-6 && a < 1e15)) {
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
    if (ec == std::errc()) {
      out.append(buf, end);
      if (std::string_view(buf, end).find('.') == std::string_view::npos) out += ".0";
      return;
    }
  }
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest, may use an exponent
  out.append(buf, end);
}

}  // namespace

std::string format_profile_csv(const Profile& profile) {
  const bool stats = profile.has_stats();
  std::string out(kHeader);
  if (stats) out += kStatsHeader;
  out += '\n';
  for (int s = 1; s <= profile.steps(); ++s)
    for (int l = 0; l < profile.layers(); ++l)
      for (int h = 0; h < profile.heads(); ++h) {
        const auto d = profile.density(s, l, h);
        if (!d) continue;
        out += std::to_string(s);
        out += ',';
        out += std::to_string(l);
        out += ',';
        out += std::to_string(h);
        out += ',';
        append_number(out, *d);
        if (stats) {
          const EntryStats st = *profile.stats(s, l, h);
          out += ',';
          out += std::to_string(st.count);
          for (double v : {st.mean, st.std, st.min, st.max}) {
            out += ',';
            append_number(out, v);
          }
        }
        out += '\n';
      }
  return out;
}

void save_profile_csv(const std::string& path, const Profile& profile) {
  const std::string text = format_profile_csv(profile);
  detail::write_file(path, std::as_bytes(std::span(text.data(), text.size())));
}

}  // namespace svoo
