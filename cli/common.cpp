#include "common.hpp"

#include <cmath>
#include <cstdio>
#include <iostream>

#include "svoo/error.hpp"
#include "svoo/profile.hpp"

namespace svoo::cli {

void ClusterOptions::add_to(CLI::App& app) {
  app.add_option("--kq", kq, "query clusters per head (0: tokens/300)")->check(CLI::NonNegativeNumber);
  app.add_option("--kk", kk, "key clusters per head (0: tokens/75)")->check(CLI::NonNegativeNumber);
  app.add_option("--iterations", iterations, "clustering iterations T")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "seed of the initial anchors");
  app.add_option("--method", method, "coclustering (the method) or kmeans (the baseline)")
      ->check(CLI::IsMember({"coclustering", "kmeans"}));
  app.add_option("--align-queries", align_queries,
                 "move query rows so that clusters hold multiples of this many rows (0: off, the spec's "
                 "clustering; 128 matches the sparse kernel's items)")
      ->check(CLI::Range(0, 256));
  app.add_option("--align-candidates", align_candidates, "taking clusters a moved row may try: its best N")
      ->check(CLI::Range(1, 64));
  app.add_option("--align-passes", align_passes,
                 "alignment passes, each with a lower bar for taking rows (1: the first only)")
      ->check(CLI::Range(1, kMaxAlignPasses));
}

ClusterConfig ClusterOptions::resolve(std::int64_t q_tokens, std::int64_t k_tokens) const {
  ClusterConfig c;
  c.kq = kq > 0 ? kq : static_cast<int>(std::max<std::int64_t>(1, std::llround(q_tokens / 300.0)));
  c.kk = kk > 0 ? kk : static_cast<int>(std::max<std::int64_t>(1, std::llround(k_tokens / 75.0)));
  c.iterations = iterations;
  c.seed = seed;
  c.query_align = align_queries;
  c.align_candidates = align_candidates;
  c.align_passes = align_passes;
  c.method = method == "kmeans" ? ClusterMethod::kmeans : ClusterMethod::coclustering;
  return c;
}

void PolicyOptions::add_to(CLI::App& app) {
  std::vector<std::string> names;
  for (const auto& p : model_presets()) names.push_back(p.name);
  app.add_option("--preset", preset, "model preset whose released defaults apply")->check(CLI::IsMember(names));
  app.add_option("--profile", profile, "profile CSV: per-head floors from (--step, --layer)")
      ->check(CLI::ExistingFile);
  app.add_option("--step", step, "denoising step (1-based) to read from the profile")->check(CLI::PositiveNumber);
  app.add_option("--layer", layer, "layer (0-based) to read from the profile")->check(CLI::NonNegativeNumber);
  app.add_option("--rule", rule, "selection rule")->check(CLI::IsMember({"released", "paper"}));
  top_p = app.add_option("--top-p", top_p_v, "top-p mass (default: the preset's)")->check(CLI::Range(0.0, 1.0));
  floor_lo = app.add_option("--floor-lo", floor_lo_v, "lower clip of the per-head floor")->check(CLI::Range(0.0, 1.0));
  floor_hi = app.add_option("--floor-hi", floor_hi_v, "upper clip of the per-head floor")->check(CLI::Range(0.0, 1.0));
  cap = app.add_option("--cap", cap_v, "keep at most this fraction of key clusters")->check(CLI::Range(0.0, 1.0));
  app.add_option("--fallback-density", fallback, "per-head density when no profile is given")
      ->check(CLI::Range(0.0, 1.0));
}

SelectionConfig PolicyOptions::selection() const {
  const ControlConfig base = ControlConfig::from_preset(find_preset(preset));
  SelectionConfig s = base.selection;
  s.rule = rule == "paper" ? SelectionRule::paper : SelectionRule::released;
  if (top_p && top_p->count()) s.top_p = top_p_v;
  if (floor_lo && floor_lo->count()) s.floor_lo = floor_lo_v;
  if (floor_hi && floor_hi->count()) s.floor_hi = floor_hi_v;
  if (cap && cap->count()) s.cap = cap_v;
  return s;
}

std::vector<double> PolicyOptions::head_density(std::int64_t heads) const {
  std::vector<double> d(static_cast<std::size_t>(heads), fallback);
  if (profile.empty()) return d;
  const Profile p = load_profile_csv(profile);
  require(p.heads() == heads, ErrorKind::invalid_argument,
          "profile " + profile + " has " + std::to_string(p.heads()) + " heads, the input has " + std::to_string(heads));
  for (std::int64_t h = 0; h < heads; ++h) {
    const auto v = p.density(step, layer, static_cast<int>(h));
    require(v.has_value(), ErrorKind::invalid_argument,
            "profile " + profile + " has no entry for step " + std::to_string(step) + ", layer " +
                std::to_string(layer) + ", head " + std::to_string(h));
    d[h] = *v;
  }
  return d;
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

void Progress::stage(const std::string& what) {
  done();
  ++current_;
  open_ = true;
  start_ = std::chrono::steady_clock::now();
  if (!quiet_) {
    std::fprintf(stderr, "[%d/%d] %s ...", current_, stages_, what.c_str());
    std::fflush(stderr);
  }
}

void Progress::done() {
  if (!open_) return;
  open_ = false;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!quiet_) std::fprintf(stderr, " %.2f s\n", s);
}

TensorView attention_input(const SafetensorsFile& file, const std::string& name, const std::string& path) {
  const HostTensor* t = file.find(name);
  if (!t) {
    std::string names;
    for (const auto& [n, _] : file.tensors) names += (names.empty() ? "" : ", ") + n;
    fail(ErrorKind::invalid_argument, path + " has no tensor '" + name + "' (it has: " + names + ")");
  }
  std::vector<std::int64_t> shape = t->shape();
  if (shape.size() == 4 && shape[0] == 1) shape.erase(shape.begin());
  require(shape.size() == 3, ErrorKind::shape,
          path + ": tensor '" + name + "' must be [heads, tokens, head_dim] (or [1, heads, tokens, head_dim]), got rank " +
              std::to_string(t->shape().size()));
  require(is_floating(t->dtype()), ErrorKind::dtype,
          path + ": tensor '" + name + "' must be F32, F16 or BF16, got " + dtype_name(t->dtype()));
  return TensorView::contiguous(const_cast<std::byte*>(t->bytes()), t->dtype(), {shape[0], shape[1], shape[2]});
}

int guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::fprintf(stderr, "\n%s\n", e.what());
    return kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nsvoo: unexpected error: %s\n", e.what());
    return kExitError;
  }
}

}  // namespace svoo::cli
