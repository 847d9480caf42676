// Sparsity profiles: one attention density per (denoising step, layer, head), the output of the
// offline stage and the per-head floor of the online stage. CSV interchange format (spec 1):
// header `Step,Layer,Head,Sparsity` (the value is the DENSITY despite the name), Step 1-based,
// Layer and Head 0-based; optional statistic columns `Count,Mean,Std,Min,Max` may follow.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace svoo {

// Statistics of one entry over the m calibration inputs it aggregates (count == 0: unknown).
struct EntryStats {
  std::int32_t count = 0;
  double mean = 0, std = 0, min = 0, max = 0;
};

class Profile {
 public:
  Profile() = default;
  // An empty profile able to hold steps x layers x heads entries (steps 1..steps).
  Profile(int steps, int layers, int heads);

  int steps() const noexcept { return steps_; }
  int layers() const noexcept { return layers_; }
  int heads() const noexcept { return heads_; }
  std::int64_t size() const noexcept;  // number of entries present
  bool complete() const noexcept { return size() == static_cast<std::int64_t>(steps_) * layers_ * heads_; }
  bool has_stats() const noexcept;     // any entry carries statistics

  // Throws invalid_argument for indices outside the grid or a density outside [0, 1] / NaN.
  void set(int step, int layer, int head, double density, const EntryStats& stats = {});
  // nullopt when the entry is absent or outside the grid.
  std::optional<double> density(int step, int layer, int head) const noexcept;
  std::optional<EntryStats> stats(int step, int layer, int head) const noexcept;
  double mean_density() const noexcept;  // over present entries; 0 when empty

 private:
  std::size_t index(int step, int layer, int head) const noexcept;
  int steps_ = 0, layers_ = 0, heads_ = 0;
  std::vector<double> density_;  // NaN where absent
  std::vector<EntryStats> stats_;
};

// Limits the parser enforces before allocating (a hostile file cannot ask for a huge grid).
inline constexpr int kMaxProfileSteps = 10000;
inline constexpr int kMaxProfileLayers = 1000;
inline constexpr int kMaxProfileHeads = 1000;
inline constexpr std::int64_t kMaxProfileEntries = 4'000'000;  // 72,000 in the largest reference profile

// Parses CSV text. The grid is sized by the largest indices found. Throws Error(format) naming
// `source` and the line for: a missing or wrong header, a wrong column count, a non-numeric,
// non-integer or out-of-range field, a density outside [0, 1] or NaN, a duplicate entry, a file
// with no entries, or sizes past the limits above.
Profile parse_profile_csv(std::string_view text, std::string_view source = "<memory>");
Profile load_profile_csv(const std::string& path);  // Error(io) if unreadable

// Writes entries in (step, layer, head) order; statistic columns only when has_stats().
std::string format_profile_csv(const Profile& profile);
void save_profile_csv(const std::string& path, const Profile& profile);

}  // namespace svoo
