// Entry statistics, rank correlation, one-way ANOVA and the input-stability report (see
// svoo/stability.hpp). Everything is in double and deterministic (no threads: the data are small).
#include "svoo/stability.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "svoo/error.hpp"

namespace svoo {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double mean_of(std::span<const double> v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

// Sample std (n - 1), 0 for fewer than two values.
double sample_std(std::span<const double> v) {
  if (v.size() < 2) return 0.0;
  const double m = mean_of(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size() - 1));
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

EntryStats entry_stats(std::span<const double> values) {
  require(!values.empty(), ErrorKind::invalid_argument, "entry statistics need at least one value");
  EntryStats s;
  s.count = static_cast<std::int32_t>(values.size());
  s.mean = mean_of(values);
  s.std = sample_std(values);
  s.min = *std::min_element(values.begin(), values.end());
  s.max = *std::max_element(values.begin(), values.end());
  return s;
}

double aggregate_value(const EntryStats& stats, Aggregate aggregate) noexcept {
  if (aggregate == Aggregate::max) return stats.max;
  return std::clamp(stats.mean + kQuantileZ * stats.std, 0.0, 1.0);
}

std::vector<double> average_ranks(std::span<const double> values) {
  const std::size_t n = values.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return values[x] < values[y]; });
  std::vector<double> rank(n);
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i;
    while (j + 1 < n && values[order[j + 1]] == values[order[i]]) ++j;
    const double r = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;  // mean of ranks i+1..j+1
    for (std::size_t t = i; t <= j; ++t) rank[order[t]] = r;
    i = j + 1;
  }
  return rank;
}

double pearson(std::span<const double> a, std::span<const double> b) {
  if (a.size() != b.size() || a.size() < 2) return kNaN;
  const double ma = mean_of(a), mb = mean_of(b);
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  if (saa == 0 || sbb == 0) return kNaN;
  return sab / std::sqrt(saa * sbb);
}

double spearman(std::span<const double> a, std::span<const double> b) {
  if (a.size() != b.size()) return kNaN;
  const auto ra = average_ranks(a), rb = average_ranks(b);
  return pearson(ra, rb);
}

Anova one_way_anova_from_stats(std::span<const double> means, std::span<const double> stds, int k) {
  require(means.size() == stds.size() && means.size() >= 2 && k >= 2, ErrorKind::invalid_argument,
          "ANOVA needs at least 2 groups of at least 2 values");
  Anova r;
  r.groups = static_cast<std::int64_t>(means.size());
  r.k = k;
  const double grand = mean_of(means);  // balanced groups: the mean of means is the grand mean
  double ssb = 0, ssw = 0;
  for (std::size_t g = 0; g < means.size(); ++g) {
    ssb += k * (means[g] - grand) * (means[g] - grand);
    ssw += (k - 1) * stds[g] * stds[g];
  }
  r.msb = ssb / static_cast<double>(r.groups - 1);
  r.msw = ssw / static_cast<double>(r.groups * (k - 1));
  const double denom = r.msb + (k - 1) * r.msw;
  r.icc = denom > 0 ? (r.msb - r.msw) / denom : kNaN;
  r.between_share = ssb + ssw > 0 ? ssb / (ssb + ssw) : kNaN;
  return r;
}

Anova one_way_anova(std::span<const double> values, std::int64_t groups, int k) {
  require(groups >= 2 && k >= 2 && values.size() == static_cast<std::size_t>(groups) * k,
          ErrorKind::invalid_argument, "ANOVA needs groups x k values with groups >= 2 and k >= 2");
  std::vector<double> means(groups), stds(groups);
  for (std::int64_t g = 0; g < groups; ++g) {
    const auto part = values.subspan(static_cast<std::size_t>(g) * k, k);
    means[g] = mean_of(part);
    stds[g] = sample_std(part);
  }
  return one_way_anova_from_stats(means, stds, k);
}

StabilityData stability_data(const std::vector<Profile>& profiles, const std::vector<std::string>& sources) {
  require(!profiles.empty(), ErrorKind::invalid_argument, "the stability report needs at least one profile");
  require(sources.size() == profiles.size(), ErrorKind::invalid_argument, "one source name per profile");
  StabilityData d;
  const Profile& p0 = profiles[0];
  d.steps = p0.steps();
  d.layers = p0.layers();
  d.heads = p0.heads();
  d.sources = sources;
  const std::int64_t n = d.entries();
  require(n > 0, ErrorKind::invalid_argument, sources[0] + ": the profile is empty");
  for (std::size_t i = 0; i < profiles.size(); ++i) {
    const Profile& p = profiles[i];
    require(p.steps() == d.steps && p.layers() == d.layers && p.heads() == d.heads, ErrorKind::invalid_argument,
            sources[i] + " has a " + std::to_string(p.steps()) + " x " + std::to_string(p.layers()) + " x " +
                std::to_string(p.heads()) + " grid, " + sources[0] + " has " + std::to_string(d.steps) + " x " +
                std::to_string(d.layers) + " x " + std::to_string(d.heads) + ": profiles of one model must share the grid");
    require(p.complete(), ErrorKind::invalid_argument,
            sources[i] + " is incomplete (" + std::to_string(p.size()) + " of " + std::to_string(n) + " entries)");
  }
  const auto count_of = [&](const Profile& p) { return p.has_stats() ? p.stats(1, 0, 0)->count : 1; };
  const int c0 = count_of(p0);
  if (profiles.size() == 1 && c0 >= 2) {
    // One multi-input profile: per-entry mean and std, no per-input values.
    d.inputs = c0;
    d.mean.resize(n);
    d.std.resize(n);
    for (int s = 1; s <= d.steps; ++s)
      for (int l = 0; l < d.layers; ++l)
        for (int h = 0; h < d.heads; ++h) {
          const EntryStats st = *p0.stats(s, l, h);
          require(st.count == c0, ErrorKind::invalid_argument,
                  sources[0] + ": entry (step " + std::to_string(s) + ", layer " + std::to_string(l) + ", head " +
                      std::to_string(h) + ") aggregates " + std::to_string(st.count) + " inputs, the first " +
                      std::to_string(c0) + ": the analysis needs the same inputs for every entry");
          d.mean[d.index(s, l, h)] = st.mean;
          d.std[d.index(s, l, h)] = st.std;
        }
    return d;
  }
  // One or more single-input profiles: each is one input.
  d.per_input = true;
  d.inputs = static_cast<int>(profiles.size());
  for (std::size_t i = 0; i < profiles.size(); ++i) {
    const int c = count_of(profiles[i]);
    require(c <= 1, ErrorKind::invalid_argument,
            sources[i] + " aggregates " + std::to_string(c) +
                " inputs: give one multi-input profile alone, or several single-input profiles");
    std::vector<double> v(n);
    for (int s = 1; s <= d.steps; ++s)
      for (int l = 0; l < d.layers; ++l)
        for (int h = 0; h < d.heads; ++h) v[d.index(s, l, h)] = *profiles[i].density(s, l, h);
    d.values.push_back(std::move(v));
  }
  d.mean.assign(n, 0.0);
  d.std.assign(n, 0.0);
  std::vector<double> x(d.inputs);
  for (std::int64_t e = 0; e < n; ++e) {
    for (int i = 0; i < d.inputs; ++i) x[i] = d.values[i][e];
    d.mean[e] = mean_of(x);
    d.std[e] = sample_std(x);
  }
  return d;
}

StabilityReport analyze_stability(const StabilityData& d) {
  StabilityReport r;
  r.steps = d.steps;
  r.layers = d.layers;
  r.heads = d.heads;
  r.inputs = d.inputs;
  r.per_input = d.per_input;
  r.sources = d.sources;
  const bool multi = d.inputs >= 2;
  r.mean_density = mean_of(d.mean);
  r.min_density = *std::min_element(d.mean.begin(), d.mean.end());
  r.max_density = *std::max_element(d.mean.begin(), d.mean.end());

  // Per-step x per-layer means (over heads), and per (layer, head) summaries.
  r.step_layer_mean.assign(static_cast<std::size_t>(d.steps) * d.layers, 0.0);
  r.per_layer_head.resize(static_cast<std::size_t>(d.layers) * d.heads);
  std::vector<double> over_steps(d.steps);
  for (int l = 0; l < d.layers; ++l)
    for (int h = 0; h < d.heads; ++h) {
      double within = 0;
      for (int s = 1; s <= d.steps; ++s) {
        over_steps[s - 1] = d.mean[d.index(s, l, h)];
        within += d.std[d.index(s, l, h)];
        r.step_layer_mean[(s - 1) * d.layers + l] += d.mean[d.index(s, l, h)] / d.heads;
      }
      Spread& sp = r.per_layer_head[l * d.heads + h];
      sp.mean = mean_of(over_steps);
      sp.std_steps = sample_std(over_steps);
      sp.cv_steps = sp.mean > 0 ? sp.std_steps / sp.mean : 0;
      if (multi) {
        sp.std_inputs = within / d.steps;
        sp.cv_inputs = sp.mean > 0 ? *sp.std_inputs / sp.mean : 0;
      }
    }
  r.per_layer.resize(d.layers);
  std::vector<double> layer_means(d.layers), head_means(d.heads);
  double head_std_sum = 0;
  for (int l = 0; l < d.layers; ++l) {
    Spread& sp = r.per_layer[l];
    for (int s = 1; s <= d.steps; ++s) over_steps[s - 1] = r.step_layer_mean[(s - 1) * d.layers + l];
    sp.mean = mean_of(over_steps);
    sp.std_steps = sample_std(over_steps);
    sp.cv_steps = sp.mean > 0 ? sp.std_steps / sp.mean : 0;
    if (multi) {
      double w = 0;
      for (int h = 0; h < d.heads; ++h) w += *r.per_layer_head[l * d.heads + h].std_inputs;
      sp.std_inputs = w / d.heads;
      sp.cv_inputs = sp.mean > 0 ? *sp.std_inputs / sp.mean : 0;
    }
    layer_means[l] = sp.mean;
    for (int h = 0; h < d.heads; ++h) head_means[h] = r.per_layer_head[l * d.heads + h].mean;
    head_std_sum += sample_std(head_means);
  }
  r.std_across_layers = sample_std(layer_means);
  r.std_across_heads = head_std_sum / d.layers;

  // Density against step, with a band.
  r.step_mean.resize(d.steps);
  r.step_lo.resize(d.steps);
  r.step_hi.resize(d.steps);
  std::vector<double> step_std(d.steps);
  for (int s = 1; s <= d.steps; ++s) {
    const auto row = std::span(r.step_layer_mean).subspan(static_cast<std::size_t>(s - 1) * d.layers, d.layers);
    r.step_mean[s - 1] = mean_of(row);
    if (multi) {
      double w = 0;
      for (int l = 0; l < d.layers; ++l)
        for (int h = 0; h < d.heads; ++h) w += d.std[d.index(s, l, h)];
      w /= static_cast<double>(d.layers) * d.heads;
      r.step_lo[s - 1] = r.step_mean[s - 1] - w;
      r.step_hi[s - 1] = r.step_mean[s - 1] + w;
    } else {
      r.step_lo[s - 1] = *std::min_element(row.begin(), row.end());
      r.step_hi[s - 1] = *std::max_element(row.begin(), row.end());
    }
  }
  r.std_across_steps = sample_std(r.step_mean);

  if (multi) {
    if (d.entries() >= 2) r.anova = one_way_anova_from_stats(d.mean, d.std, d.inputs);
    r.within_std = mean_of(d.std);
    if (r.std_across_layers > 0) {
      r.ratio = *r.within_std / r.std_across_layers;
      r.stable = *r.ratio < kStableRatio;
    }
    if (d.per_input)
      for (int a = 0; a < d.inputs; ++a)
        for (int b = a + 1; b < d.inputs; ++b) r.pairs.push_back({a, b, spearman(d.values[a], d.values[b])});
    else
      r.notes.push_back("Pairwise Spearman correlations between inputs need per-input profiles; this profile keeps "
                        "only per-entry statistics (count " + std::to_string(d.inputs) + ").");
    if (r.stable)
      r.notes.push_back(std::string("Verdict: ") + (*r.stable ? "YES" : "NO") + ", the spread across inputs (" +
                        fmt(*r.within_std) + ") is " + fmt(*r.ratio) + " x the spread across layers (" +
                        fmt(r.std_across_layers) + "); threshold " + fmt(kStableRatio) + ".");
    else
      r.notes.push_back("No verdict: every layer has the same mean density, so there is no layer spread to compare with.");
  } else {
    r.notes.push_back("One input only: no cross-input statistics (ICC, pairwise correlation, within-entry spread) "
                      "and no verdict on input stability. What this profile shows is structure across steps, "
                      "layers and heads of one generation.");
  }
  r.notes.push_back("Density across layers: std of per-layer means " + fmt(r.std_across_layers) +
                    "; across steps: std of per-step means " + fmt(r.std_across_steps) +
                    "; across heads within a layer: mean std " + fmt(r.std_across_heads) + ".");
  return r;
}

ProfileDiff compare_profiles(const Profile& a, const Profile& b) {
  ProfileDiff d;
  const int steps = std::max(a.steps(), b.steps()), layers = std::max(a.layers(), b.layers()),
            heads = std::max(a.heads(), b.heads());
  std::vector<double> xa, xb;
  double sum = 0;
  d.max_abs = -1;
  for (int s = 1; s <= steps; ++s)
    for (int l = 0; l < layers; ++l)
      for (int h = 0; h < heads; ++h) {
        const auto va = a.density(s, l, h), vb = b.density(s, l, h);
        if (va && vb) {
          const ProfileDiff::Entry e{s, l, h, *va, *vb};
          d.entries.push_back(e);
          xa.push_back(*va);
          xb.push_back(*vb);
          const double diff = std::fabs(*vb - *va);
          sum += diff;
          if (diff > d.max_abs) {
            d.max_abs = diff;
            d.max_entry = e;
          }
        } else {
          d.only_a += va.has_value();
          d.only_b += vb.has_value();
        }
      }
  require(!d.entries.empty(), ErrorKind::invalid_argument, "the two profiles have no entry in common");
  d.mean_abs = sum / static_cast<double>(d.entries.size());
  d.correlation = pearson(xa, xb);
  return d;
}

std::string format_diff_csv(const ProfileDiff& diff) {
  std::string out = "Step,Layer,Head,A,B,Diff\n";
  char buf[128];
  for (const auto& e : diff.entries) {
    std::snprintf(buf, sizeof buf, "%d,%d,%d,%.9g,%.9g,%.9g\n", e.step, e.layer, e.head, e.a, e.b, e.b - e.a);
    out += buf;
  }
  return out;
}

}  // namespace svoo
