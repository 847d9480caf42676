// Per-entry statistics over calibration inputs (spec 1) and the input-stability analysis of
// profiles: is a head's density a property of the (step, layer, head) or of the input?
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "svoo/profile.hpp"

namespace svoo {

// count, mean, SAMPLE standard deviation (n - 1; 0 when n == 1), min, max. Error on an empty set.
EntryStats entry_stats(std::span<const double> values);

// How one profile value is made from an entry's inputs (spec 1).
enum class Aggregate { max, quantile };
inline constexpr double kQuantileZ = 1.645;  // alpha = 0.95 of a normal fit
// max: stats.max; quantile: mean + 1.645 * std, clipped to [0, 1].
double aggregate_value(const EntryStats& stats, Aggregate aggregate) noexcept;

// Ranks 1..n, ties get the average of the ranks they span.
std::vector<double> average_ranks(std::span<const double> values);
// Pearson correlation; NaN when either side is constant or sizes differ / < 2.
double pearson(std::span<const double> a, std::span<const double> b);
// Spearman rank correlation: Pearson on average ranks (so ties are handled).
double spearman(std::span<const double> a, std::span<const double> b);

// One-way ANOVA over G groups of k values each (balanced). ICC(1) = (MSB - MSW)/(MSB + (k-1) MSW);
// between_share = SSB / (SSB + SSW), the plain variance decomposition.
struct Anova {
  std::int64_t groups = 0;
  int k = 0;
  double msb = 0, msw = 0, icc = 0, between_share = 0;
};
// From raw values: values[g * k + i] is input i of group g.
Anova one_way_anova(std::span<const double> values, std::int64_t groups, int k);
// From per-group means and sample stds (what a stats profile keeps): the same numbers.
Anova one_way_anova_from_stats(std::span<const double> means, std::span<const double> stds, int k);

// The entries of one or more profiles arranged per input. Accepted (else Error(invalid_argument)):
// one profile with statistics of equal count >= 2 (per-entry mean/std, no per-input values), or
// one or more single-input profiles (no statistics or count 1) sharing one complete grid.
struct StabilityData {
  int steps = 0, layers = 0, heads = 0;
  int inputs = 0;                     // k
  bool per_input = false;             // values holds per-input densities
  std::vector<std::vector<double>> values;  // [input][entry] when per_input
  std::vector<double> mean, std;      // [entry], std over inputs (sample; 0 when k == 1)
  std::vector<std::string> sources;   // one name per profile given
  std::int64_t entries() const noexcept { return static_cast<std::int64_t>(steps) * layers * heads; }
  std::size_t index(int step, int layer, int head) const noexcept {  // step 1-based
    return (static_cast<std::size_t>(step - 1) * layers + layer) * heads + head;
  }
};
StabilityData stability_data(const std::vector<Profile>& profiles, const std::vector<std::string>& sources);

struct Spread {
  double mean = 0;
  std::optional<double> std_inputs, cv_inputs;  // mean within-entry std across inputs (k >= 2)
  double std_steps = 0, cv_steps = 0;           // std over steps of the per-step mean
};
struct PairCorrelation {
  int a = 0, b = 0;
  double spearman = 0;
};

// Inputs are stable when (mean within-entry std across inputs) / (std of per-layer means) is
// below this: the input noise is then a quarter of the layer-to-layer spread (1/16 of its
// variance), so a profile from one input orders and sizes layers nearly as any other input would.
inline constexpr double kStableRatio = 0.25;

struct StabilityReport {
  int steps = 0, layers = 0, heads = 0, inputs = 0;
  bool per_input = false;
  std::vector<std::string> sources;
  double mean_density = 0, min_density = 0, max_density = 0;
  std::vector<Spread> per_layer;           // [layer]
  std::vector<Spread> per_layer_head;      // [layer * heads + head]
  std::vector<double> step_mean;           // [step - 1] over layers, heads, inputs
  std::vector<double> step_lo, step_hi;    // band: +- within std (k >= 2) or min/max over layers (k == 1)
  std::vector<double> step_layer_mean;     // [(step - 1) * layers + layer]
  double std_across_layers = 0;            // sample std of the per-layer means
  double std_across_steps = 0;             // sample std of the per-step means
  double std_across_heads = 0;             // mean over layers of the std of head means within the layer
  std::optional<Anova> anova;              // k >= 2
  std::vector<PairCorrelation> pairs;      // per_input and k >= 2
  std::optional<double> within_std;        // mean within-entry std across inputs
  std::optional<double> ratio;             // within_std / std_across_layers
  std::optional<bool> stable;              // ratio < kStableRatio; nullopt with one input
  std::vector<std::string> notes;          // what can and cannot be concluded, in words
};
StabilityReport analyze_stability(const StabilityData& data);

// Differences between two profiles on their overlapping entries.
struct ProfileDiff {
  struct Entry {
    int step, layer, head;
    double a, b;
  };
  std::vector<Entry> entries;  // overlap, in (step, layer, head) order
  std::int64_t only_a = 0, only_b = 0;
  double mean_abs = 0, max_abs = 0, correlation = 0;
  Entry max_entry{};
};
ProfileDiff compare_profiles(const Profile& a, const Profile& b);
std::string format_diff_csv(const ProfileDiff& diff);  // Step,Layer,Head,A,B,Diff (B - A)

}  // namespace svoo
