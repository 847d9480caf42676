// Control across a generation (spec 2.5): which calls run dense, which recluster and which reuse
// cached clusters, one cache per (CFG branch, expert, layer), and the per-head floors looked up in
// a profile. Backend-independent: the cache holds whatever clustering type the backend produces.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "svoo/clustering.hpp"
#include "svoo/profile.hpp"

namespace svoo {

// Released defaults of one model family (spec 2.5 table, 720p).
struct ModelPreset {
  std::string name;        // e.g. "wan2.1-t2v-1.3b"
  std::string description; // e.g. "Wan2.1-T2V-1.3B"
  int layers = 0, heads = 0, steps = 0;
  int warmup_steps = 0;    // the first warmup_steps steps are dense
  int dense_layers = 0;    // layers with index < dense_layers are dense
  double top_p = 0.90;
  double floor_lo = 0.15, floor_hi = 0.20;
  int reuse_interval = 20;
  int kq = 256, kk = 1024, iterations = 2;
  int experts = 1;                      // Wan2.2 A14B: 2
  std::string reference_profile;        // file name in shared/reference-profiles, "" if none
};

const std::vector<ModelPreset>& model_presets();
// Throws Error(invalid_argument) listing the known names when `name` is unknown.
const ModelPreset& find_preset(std::string_view name);

struct ControlConfig {
  int steps = 50;
  int layers = 30;
  int heads = 12;
  double warmup_fraction = 0.2;     // w: floor(w * steps) dense warm-up steps
  std::optional<int> warmup_steps;  // overrides the fraction when set
  double dense_layer_fraction = 0.03;
  std::optional<int> dense_layers;  // overrides the fraction when set
  int reuse_interval = 20;
  double fallback_density = 0.10;   // per-head profile value when the profile lacks the entry
  SelectionConfig selection;
  ClusterConfig cluster;

  // From a preset; every field can be changed afterwards.
  static ControlConfig from_preset(const ModelPreset& preset);
};

enum class Mode { dense, recluster, reuse };
const char* mode_name(Mode mode) noexcept;

struct Decision {
  Mode mode = Mode::dense;
  int step = 0, layer = 0, branch = 0, expert = 0;
  std::vector<double> head_density;  // per head: profile value (or fallback), before clipping
  bool from_profile = false;         // every head_density came from the profile
};

// Steps are 1-based (as in profiles); layers, heads, branches (0 = conditional,
// 1 = unconditional) and experts are 0-based.
class Controller {
 public:
  explicit Controller(ControlConfig config, std::shared_ptr<const Profile> profile = nullptr);

  const ControlConfig& config() const noexcept { return config_; }
  int warmup_steps() const noexcept;  // resolved
  int dense_layers() const noexcept;  // resolved

  // The mode for this call: dense during warm-up and in dense layers; otherwise recluster on the
  // schedule (first sparse step, then every reuse_interval steps) or when this (branch, expert,
  // layer) has no cached clustering yet; reuse in between. Throws invalid_argument for a step,
  // layer, branch or expert out of range.
  Decision decide(int step, int layer, int branch = 0, int expert = 0) const;
  // The same rule for a caller that keeps its clusterings itself (e.g. the Python integration):
  // `cached_at` is the step at which its clustering for this (branch, expert, layer) was made, or
  // nullopt when it has none.
  Decision decide_with_cache(int step, int layer, int branch, int expert, std::optional<int> cached_at) const;

  // The cache: one clustering per (branch, expert, layer), with the step it was made at.
  void store(const Decision& decision, Clustering clustering);
  const Clustering* cached(int layer, int branch = 0, int expert = 0) const noexcept;
  std::optional<int> cached_step(int layer, int branch = 0, int expert = 0) const noexcept;
  void clear() noexcept { cache_.clear(); }

 private:
  struct Entry {
    int step = 0;
    Clustering clustering;
  };
  ControlConfig config_;
  std::shared_ptr<const Profile> profile_;
  std::map<std::tuple<int, int, int>, Entry> cache_;
};

}  // namespace svoo
