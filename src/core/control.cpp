// Control across a generation (spec 2.5): presets, the dense/recluster/reuse schedule and the
// per-(branch, expert, layer) clustering cache.
#include "svoo/control.hpp"

#include <cmath>
#include <string>

#include "svoo/error.hpp"

namespace svoo {

namespace {

// Builds "name = value, expected [lo, hi]" style messages without pulling in a format library.
std::string num(double v) {
  std::string s = std::to_string(v);
  // to_string always prints 6 decimals; trim trailing zeros so 0.9 reads as 0.9.
  while (s.size() > 1 && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

void require_range(double v, double lo, double hi, const char* name) {
  // Written as a negated conjunction so that NaN fails too.
  require(v >= lo && v <= hi, ErrorKind::invalid_argument,
          std::string(name) + " = " + num(v) + ", expected a value in [" + num(lo) + ", " + num(hi) + "]");
}

void require_at_least(long long v, long long lo, const char* name) {
  require(v >= lo, ErrorKind::invalid_argument,
          std::string(name) + " = " + std::to_string(v) + ", expected >= " + std::to_string(lo));
}

// floor(fraction * count), robust to binary rounding: a product that is an integer in exact
// arithmetic may evaluate just below it (0.29 * 100 gives 28.999999999999996), and a plain floor
// would then lose a whole step. The epsilon is far below any real fraction's resolution.
int floor_fraction(double fraction, int count) {
  return static_cast<int>(std::floor(fraction * count + 1e-9));
}

ModelPreset make_preset(std::string name, std::string description, int experts, int layers, int heads,
                        int steps, int warmup, int dense_layers, double top_p, double lo, double hi,
                        int reuse, std::string profile) {
  ModelPreset p;
  p.name = std::move(name);
  p.description = std::move(description);
  p.experts = experts;
  p.layers = layers;
  p.heads = heads;
  p.steps = steps;
  p.warmup_steps = warmup;
  p.dense_layers = dense_layers;
  p.top_p = top_p;
  p.floor_lo = lo;
  p.floor_hi = hi;
  p.reuse_interval = reuse;
  p.kq = 256;
  p.kk = 1024;
  p.iterations = 2;
  p.reference_profile = std::move(profile);
  return p;
}

}  // namespace

const char* cluster_method_name(ClusterMethod method) noexcept {
  switch (method) {
    case ClusterMethod::coclustering: return "coclustering";
    case ClusterMethod::kmeans: return "kmeans";
  }
  return "unknown";
}

const char* selection_rule_name(SelectionRule rule) noexcept {
  switch (rule) {
    case SelectionRule::released: return "released";
    case SelectionRule::paper: return "paper";
  }
  return "unknown";
}

const char* mode_name(Mode mode) noexcept {
  switch (mode) {
    case Mode::dense: return "dense";
    case Mode::recluster: return "recluster";
    case Mode::reuse: return "reuse";
  }
  return "unknown";
}

// The released defaults of spec 2.5 (720p).
const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> presets = {
      make_preset("wan2.1-t2v-1.3b", "Wan2.1-T2V-1.3B", 1, 30, 12, 50, 10, 0, 0.90, 0.15, 0.20, 20,
                  "sparsity_wan_1.3B_t2v.csv"),
      make_preset("wan2.1-t2v-14b", "Wan2.1-T2V-14B", 1, 40, 40, 50, 10, 1, 0.90, 0.15, 0.20, 40,
                  "sparsity_wan_14B_t2v.csv"),
      make_preset("wan2.1-i2v-14b", "Wan2.1-I2V-14B", 1, 40, 40, 40, 8, 1, 0.90, 0.10, 0.15, 20,
                  "sparsity_wan_14B_i2v.csv"),
      make_preset("wan2.2-t2v-a14b", "Wan2.2-T2V-A14B", 2, 40, 40, 40, 8, 1, 0.90, 0.20, 0.22, 40,
                  "sparsity_wan22_A14B_t2v.csv"),
      make_preset("wan2.2-i2v-a14b", "Wan2.2-I2V-A14B", 2, 40, 40, 40, 8, 1, 0.90, 0.20, 0.25, 40,
                  "sparsity_wan22_A14B_i2v.csv"),
      make_preset("hunyuan-t2v", "HunyuanVideo T2V", 1, 60, 24, 50, 5, 1, 0.88, 0.05, 0.10, 50,
                  "sparsity_hunyuan10_13B_t2v.csv"),
      make_preset("hunyuan-i2v", "HunyuanVideo I2V", 1, 60, 24, 50, 5, 1, 0.88, 0.05, 0.10, 50,
                  "sparsity_hunyuan10_13B_i2v.csv"),
  };
  return presets;
}

const ModelPreset& find_preset(std::string_view name) {
  std::string known;
  for (const auto& p : model_presets()) {
    if (p.name == name) return p;
    known += known.empty() ? p.name : ", " + p.name;
  }
  fail(ErrorKind::invalid_argument, "unknown model preset '" + std::string(name) + "'; known presets: " + known);
}

ControlConfig ControlConfig::from_preset(const ModelPreset& preset) {
  ControlConfig c;
  c.steps = preset.steps;
  c.layers = preset.layers;
  c.heads = preset.heads;
  // The released code states the warm-up as a fraction of the steps (0.2 Wan, 0.1 HunyuanVideo);
  // the preset's count is that fraction resolved, so the ratio recovers it exactly.
  c.warmup_fraction = preset.steps > 0 ? static_cast<double>(preset.warmup_steps) / preset.steps : 0.0;
  c.warmup_steps = preset.warmup_steps;
  c.dense_layer_fraction = 0.03;
  c.dense_layers = preset.dense_layers;
  c.reuse_interval = preset.reuse_interval;
  c.selection.rule = SelectionRule::released;
  c.selection.top_p = preset.top_p;
  c.selection.floor_lo = preset.floor_lo;
  c.selection.floor_hi = preset.floor_hi;
  c.cluster.kq = preset.kq;
  c.cluster.kk = preset.kk;
  c.cluster.iterations = preset.iterations;
  return c;
}

Controller::Controller(ControlConfig config, std::shared_ptr<const Profile> profile)
    : config_(std::move(config)), profile_(std::move(profile)) {
  const ControlConfig& c = config_;
  require_at_least(c.steps, 1, "steps");
  require_at_least(c.layers, 1, "layers");
  require_at_least(c.heads, 1, "heads");
  require_at_least(c.reuse_interval, 1, "reuse_interval");
  require_range(c.warmup_fraction, 0.0, 1.0, "warmup_fraction");
  require_range(c.dense_layer_fraction, 0.0, 1.0, "dense_layer_fraction");
  if (c.warmup_steps) require_range(*c.warmup_steps, 0, c.steps, "warmup_steps");
  if (c.dense_layers) require_range(*c.dense_layers, 0, c.layers, "dense_layers");
  require_range(c.fallback_density, 0.0, 1.0, "fallback_density");
  require_range(c.selection.top_p, 0.0, 1.0, "selection.top_p");
  require_range(c.selection.floor_lo, 0.0, 1.0, "selection.floor_lo");
  require_range(c.selection.floor_hi, c.selection.floor_lo, 1.0, "selection.floor_hi");
  require_at_least(c.cluster.kq, 1, "cluster.kq");
  require_at_least(c.cluster.kk, 1, "cluster.kk");
  require_at_least(c.cluster.iterations, 0, "cluster.iterations");
  if (profile_) {
    require(profile_->heads() == c.heads, ErrorKind::invalid_argument,
            "profile has " + std::to_string(profile_->heads()) + " heads, config has " + std::to_string(c.heads));
    require(profile_->layers() >= c.layers, ErrorKind::invalid_argument,
            "profile has " + std::to_string(profile_->layers()) + " layers, config needs " +
                std::to_string(c.layers));
  }
}

int Controller::warmup_steps() const noexcept {
  return config_.warmup_steps ? *config_.warmup_steps : floor_fraction(config_.warmup_fraction, config_.steps);
}

int Controller::dense_layers() const noexcept {
  return config_.dense_layers ? *config_.dense_layers
                              : floor_fraction(config_.dense_layer_fraction, config_.layers);
}

Decision Controller::decide(int step, int layer, int branch, int expert) const {
  return decide_with_cache(step, layer, branch, expert, cached_step(layer, branch, expert));
}

Decision Controller::decide_with_cache(int step, int layer, int branch, int expert,
                                       std::optional<int> cached_at) const {
  require_range(step, 1, config_.steps, "step");
  require_range(layer, 0, config_.layers - 1, "layer");
  require_at_least(branch, 0, "branch");
  require_at_least(expert, 0, "expert");

  Decision d;
  d.step = step;
  d.layer = layer;
  d.branch = branch;
  d.expert = expert;

  // Per-head floors: filled for dense calls too, so callers can log or measure them uniformly.
  d.head_density.resize(static_cast<std::size_t>(config_.heads), config_.fallback_density);
  d.from_profile = profile_ != nullptr;
  for (int h = 0; h < config_.heads; ++h) {
    const std::optional<double> v = profile_ ? profile_->density(step, layer, h) : std::nullopt;
    if (v) {
      d.head_density[static_cast<std::size_t>(h)] = *v;
    } else {
      d.from_profile = false;
    }
  }

  const int warmup = warmup_steps();
  if (step <= warmup || layer < dense_layers()) {
    d.mode = Mode::dense;
    return d;
  }

  // Schedule: the first sparse step s0, then every reuse_interval steps.
  const int s0 = warmup + 1;
  const int since = (step - s0) % config_.reuse_interval;
  const int last_scheduled = step - since;
  // A cached clustering is usable only if it was made within the current reuse window: one made
  // at a later step belongs to an earlier generation, and one older than the last scheduled
  // recluster means that recluster was never stored.
  const bool usable = cached_at && *cached_at >= last_scheduled && *cached_at <= step;
  d.mode = (since == 0 || !usable) ? Mode::recluster : Mode::reuse;
  return d;
}

void Controller::store(const Decision& decision, Clustering clustering) {
  require(decision.mode != Mode::dense, ErrorKind::invalid_argument,
          "cannot store a clustering for a dense decision (step " + std::to_string(decision.step) + ", layer " +
              std::to_string(decision.layer) + ")");
  require_range(decision.step, 1, config_.steps, "decision.step");
  require_range(decision.layer, 0, config_.layers - 1, "decision.layer");
  require_at_least(decision.branch, 0, "decision.branch");
  require_at_least(decision.expert, 0, "decision.expert");
  cache_[{decision.branch, decision.expert, decision.layer}] = Entry{decision.step, std::move(clustering)};
}

const Clustering* Controller::cached(int layer, int branch, int expert) const noexcept {
  const auto it = cache_.find({branch, expert, layer});
  return it == cache_.end() ? nullptr : &it->second.clustering;
}

std::optional<int> Controller::cached_step(int layer, int branch, int expert) const noexcept {
  const auto it = cache_.find({branch, expert, layer});
  if (it == cache_.end()) return std::nullopt;
  return it->second.step;
}

}  // namespace svoo
