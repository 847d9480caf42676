#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "svoo/control.hpp"
#include "svoo/error.hpp"

namespace svoo {
namespace {

// Runs `fn`, expecting an svoo::Error of kind invalid_argument whose message contains each of
// `parts` (so the message really names the offending value and its range).
template <typename Fn>
void expect_invalid(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << e.what();
    const std::string msg = e.what();
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// A clustering whose content identifies who stored it, so cache lookups can be checked exactly.
Clustering tagged(int tag) {
  Clustering c;
  c.heads = 1;
  c.q_labels = {tag};
  return c;
}
int tag_of(const Clustering* c) { return c == nullptr || c->q_labels.empty() ? -1 : c->q_labels[0]; }
int tag_for(int step, int layer, int branch, int expert) { return ((step * 100 + layer) * 10 + branch) * 10 + expert; }

TEST(Presets, TableMatchesTheSpec) {
  const auto& all = model_presets();
  ASSERT_EQ(all.size(), 7u);
  struct Row {
    const char* name;
    int experts, layers, heads, steps, warmup, dense_layers;
    double p, lo, hi;
    int reuse;
    const char* profile;
  };
  const Row rows[] = {
      {"wan2.1-t2v-1.3b", 1, 30, 12, 50, 10, 0, 0.90, 0.15, 0.20, 20, "sparsity_wan_1.3B_t2v.csv"},
      {"wan2.1-t2v-14b", 1, 40, 40, 50, 10, 1, 0.90, 0.15, 0.20, 40, "sparsity_wan_14B_t2v.csv"},
      {"wan2.1-i2v-14b", 1, 40, 40, 40, 8, 1, 0.90, 0.10, 0.15, 20, "sparsity_wan_14B_i2v.csv"},
      {"wan2.2-t2v-a14b", 2, 40, 40, 40, 8, 1, 0.90, 0.20, 0.22, 40, "sparsity_wan22_A14B_t2v.csv"},
      {"wan2.2-i2v-a14b", 2, 40, 40, 40, 8, 1, 0.90, 0.20, 0.25, 40, "sparsity_wan22_A14B_i2v.csv"},
      {"hunyuan-t2v", 1, 60, 24, 50, 5, 1, 0.88, 0.05, 0.10, 50, "sparsity_hunyuan10_13B_t2v.csv"},
      {"hunyuan-i2v", 1, 60, 24, 50, 5, 1, 0.88, 0.05, 0.10, 50, "sparsity_hunyuan10_13B_i2v.csv"},
  };
  for (std::size_t i = 0; i < 7; ++i) {
    const Row& r = rows[i];
    const ModelPreset& p = all[i];
    SCOPED_TRACE(r.name);
    EXPECT_EQ(p.name, r.name);
    EXPECT_EQ(&find_preset(r.name), &p);
    EXPECT_FALSE(p.description.empty());
    EXPECT_EQ(p.experts, r.experts);
    EXPECT_EQ(p.layers, r.layers);
    EXPECT_EQ(p.heads, r.heads);
    EXPECT_EQ(p.steps, r.steps);
    EXPECT_EQ(p.warmup_steps, r.warmup);
    EXPECT_EQ(p.dense_layers, r.dense_layers);
    EXPECT_DOUBLE_EQ(p.top_p, r.p);
    EXPECT_DOUBLE_EQ(p.floor_lo, r.lo);
    EXPECT_DOUBLE_EQ(p.floor_hi, r.hi);
    EXPECT_EQ(p.reuse_interval, r.reuse);
    EXPECT_EQ(p.kq, 256);
    EXPECT_EQ(p.kk, 1024);
    EXPECT_EQ(p.iterations, 2);
    EXPECT_EQ(p.reference_profile, r.profile);
  }
  EXPECT_EQ(find_preset("wan2.1-t2v-1.3b").description, "Wan2.1-T2V-1.3B");
}

TEST(Presets, UnknownNameListsTheKnownOnes) {
  expect_invalid([] { find_preset("wan3-t2v"); },
                 {"wan3-t2v", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b", "wan2.2-t2v-a14b",
                  "wan2.2-i2v-a14b", "hunyuan-t2v", "hunyuan-i2v"});
  expect_invalid([] { find_preset(""); }, {"hunyuan-i2v"});
}

TEST(Presets, ConfigFromPresetCarriesEveryField) {
  const ControlConfig wan = ControlConfig::from_preset(find_preset("wan2.1-i2v-14b"));
  EXPECT_EQ(wan.steps, 40);
  EXPECT_EQ(wan.layers, 40);
  EXPECT_EQ(wan.heads, 40);
  ASSERT_TRUE(wan.warmup_steps.has_value());
  EXPECT_EQ(*wan.warmup_steps, 8);
  ASSERT_TRUE(wan.dense_layers.has_value());
  EXPECT_EQ(*wan.dense_layers, 1);
  EXPECT_DOUBLE_EQ(wan.warmup_fraction, 0.2);
  EXPECT_DOUBLE_EQ(wan.dense_layer_fraction, 0.03);
  EXPECT_EQ(wan.reuse_interval, 20);
  EXPECT_EQ(wan.selection.rule, SelectionRule::released);
  EXPECT_DOUBLE_EQ(wan.selection.top_p, 0.90);
  EXPECT_DOUBLE_EQ(wan.selection.floor_lo, 0.10);
  EXPECT_DOUBLE_EQ(wan.selection.floor_hi, 0.15);
  EXPECT_FALSE(wan.selection.cap.has_value());
  EXPECT_EQ(wan.cluster.kq, 256);
  EXPECT_EQ(wan.cluster.kk, 1024);
  EXPECT_EQ(wan.cluster.iterations, 2);
  EXPECT_DOUBLE_EQ(wan.fallback_density, 0.10);

  const ControlConfig hy = ControlConfig::from_preset(find_preset("hunyuan-t2v"));
  EXPECT_DOUBLE_EQ(hy.warmup_fraction, 0.1);
  EXPECT_EQ(*hy.warmup_steps, 5);
  EXPECT_EQ(*hy.dense_layers, 1);
  EXPECT_DOUBLE_EQ(hy.selection.top_p, 0.88);
  EXPECT_EQ(hy.reuse_interval, 50);

  // The fractions alone reproduce the preset's counts for every model.
  for (const auto& p : model_presets()) {
    ControlConfig c = ControlConfig::from_preset(p);
    c.warmup_steps.reset();
    c.dense_layers.reset();
    const Controller ctl(c);
    EXPECT_EQ(ctl.warmup_steps(), p.warmup_steps) << p.name;
    EXPECT_EQ(ctl.dense_layers(), p.dense_layers) << p.name;
  }
}

TEST(Names, EnumsHaveStableNames) {
  EXPECT_STREQ(mode_name(Mode::dense), "dense");
  EXPECT_STREQ(mode_name(Mode::recluster), "recluster");
  EXPECT_STREQ(mode_name(Mode::reuse), "reuse");
  EXPECT_STREQ(cluster_method_name(ClusterMethod::coclustering), "coclustering");
  EXPECT_STREQ(cluster_method_name(ClusterMethod::kmeans), "kmeans");
  EXPECT_STREQ(selection_rule_name(SelectionRule::released), "released");
  EXPECT_STREQ(selection_rule_name(SelectionRule::paper), "paper");
}

int resolved_warmup(double fraction, int steps) {
  ControlConfig c;
  c.steps = steps;
  c.warmup_fraction = fraction;
  return Controller(c).warmup_steps();
}
int resolved_dense_layers(double fraction, int layers) {
  ControlConfig c;
  c.layers = layers;
  c.dense_layer_fraction = fraction;
  return Controller(c).dense_layers();
}

TEST(Controller, WarmupAndDenseLayerArithmetic) {
  EXPECT_EQ(resolved_warmup(0.2, 50), 10);
  EXPECT_EQ(resolved_warmup(0.2, 40), 8);
  EXPECT_EQ(resolved_warmup(0.1, 50), 5);
  EXPECT_EQ(resolved_warmup(0.29, 100), 29);  // 0.29 * 100 evaluates to 28.999999999999996
  EXPECT_EQ(resolved_warmup(0.2, 4), 0);      // floor(0.8)
  EXPECT_EQ(resolved_warmup(0.0, 50), 0);
  EXPECT_EQ(resolved_warmup(1.0, 50), 50);
  EXPECT_EQ(resolved_dense_layers(0.03, 30), 0);
  EXPECT_EQ(resolved_dense_layers(0.03, 40), 1);
  EXPECT_EQ(resolved_dense_layers(0.03, 60), 1);
  EXPECT_EQ(resolved_dense_layers(0.03, 100), 3);

  ControlConfig c;  // explicit counts override the fractions
  c.warmup_steps = 3;
  c.dense_layers = 2;
  const Controller ctl(c);
  EXPECT_EQ(ctl.warmup_steps(), 3);
  EXPECT_EQ(ctl.dense_layers(), 2);
  EXPECT_EQ(ctl.decide(3, 5).mode, Mode::dense);
  EXPECT_EQ(ctl.decide(4, 1).mode, Mode::dense);
  EXPECT_EQ(ctl.decide(4, 2).mode, Mode::recluster);
}

// Simulates a 50-step Wan2.1-1.3B generation with both CFG branches, storing a distinct clustering
// after every recluster, and checks the mode and the reused cache of every call.
TEST(Controller, SimulatedWan13BGeneration) {
  Controller ctl(ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b")));
  std::map<Mode, int> counts;
  for (int step = 1; step <= 50; ++step) {
    for (int layer = 0; layer < 30; ++layer) {
      for (int branch = 0; branch < 2; ++branch) {
        const Decision d = ctl.decide(step, layer, branch);
        EXPECT_EQ(d.step, step);
        EXPECT_EQ(d.layer, layer);
        EXPECT_EQ(d.branch, branch);
        EXPECT_EQ(d.expert, 0);
        const Mode want = step <= 10 ? Mode::dense : (step == 11 || step == 31) ? Mode::recluster : Mode::reuse;
        ASSERT_EQ(d.mode, want) << "step " << step << " layer " << layer << " branch " << branch;
        ++counts[d.mode];
        if (d.mode == Mode::recluster) {
          ctl.store(d, tagged(tag_for(step, layer, branch, 0)));
        } else if (d.mode == Mode::reuse) {
          const int made = step < 31 ? 11 : 31;
          EXPECT_EQ(ctl.cached_step(layer, branch), made);
          EXPECT_EQ(tag_of(ctl.cached(layer, branch)), tag_for(made, layer, branch, 0));
        }
      }
    }
  }
  EXPECT_EQ(counts[Mode::dense], 10 * 30 * 2);
  EXPECT_EQ(counts[Mode::recluster], 2 * 30 * 2);
  EXPECT_EQ(counts[Mode::reuse], 38 * 30 * 2);
}

// Wan2.2-A14B: 40 steps, warm-up 8, layer 0 dense, interval 40 (one scheduled recluster at step 9).
// The high-noise expert 0 runs steps 1..20, the low-noise expert 1 steps 21..40; expert 1 has no
// cache when it first runs, so it reclusters at step 21 and reuses afterwards.
TEST(Controller, SimulatedWan22A14BGenerationWithExpertSwitch) {
  Controller ctl(ControlConfig::from_preset(find_preset("wan2.2-t2v-a14b")));
  for (int step = 1; step <= 40; ++step) {
    const int expert = step <= 20 ? 0 : 1;
    for (int layer = 0; layer < 40; ++layer) {
      for (int branch = 0; branch < 2; ++branch) {
        const Decision d = ctl.decide(step, layer, branch, expert);
        EXPECT_EQ(d.expert, expert);
        Mode want = Mode::reuse;
        if (step <= 8 || layer == 0) want = Mode::dense;
        else if (step == 9 || step == 21) want = Mode::recluster;
        ASSERT_EQ(d.mode, want) << "step " << step << " layer " << layer << " branch " << branch;
        if (d.mode == Mode::recluster) {
          ctl.store(d, tagged(tag_for(step, layer, branch, expert)));
        } else if (d.mode == Mode::reuse) {
          const int made = expert == 0 ? 9 : 21;
          EXPECT_EQ(ctl.cached_step(layer, branch, expert), made);
          EXPECT_EQ(tag_of(ctl.cached(layer, branch, expert)), tag_for(made, layer, branch, expert));
        }
      }
    }
  }
  // Expert 0's caches survive the switch; layer 0 never got one.
  EXPECT_EQ(tag_of(ctl.cached(5, 1, 0)), tag_for(9, 5, 1, 0));
  EXPECT_EQ(ctl.cached_step(5, 1, 1), 21);
  EXPECT_EQ(ctl.cached(0, 0, 0), nullptr);
  EXPECT_FALSE(ctl.cached_step(0, 0, 1).has_value());
}

TEST(Controller, BranchesKeepSeparateCaches) {
  Controller ctl(ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b")));
  const Decision cond = ctl.decide(11, 4, 0);
  const Decision uncond = ctl.decide(11, 4, 1);
  ctl.store(cond, tagged(111));
  EXPECT_EQ(ctl.decide(12, 4, 1).mode, Mode::recluster);  // conditional cache does not serve branch 1
  ctl.store(uncond, tagged(222));
  EXPECT_EQ(tag_of(ctl.cached(4, 0)), 111);
  EXPECT_EQ(tag_of(ctl.cached(4, 1)), 222);
  EXPECT_EQ(ctl.decide(12, 4, 0).mode, Mode::reuse);
  EXPECT_EQ(ctl.decide(12, 4, 1).mode, Mode::reuse);
  EXPECT_EQ(ctl.cached(5, 0), nullptr);
  EXPECT_EQ(ctl.decide(12, 5, 0).mode, Mode::recluster);  // other layers have no cache yet
  // Any non-negative branch id is its own cache (e.g. a third guidance pass).
  EXPECT_EQ(ctl.decide(12, 4, 2).mode, Mode::recluster);
  ctl.clear();
  EXPECT_EQ(ctl.cached(4, 0), nullptr);
  EXPECT_EQ(ctl.decide(12, 4, 0).mode, Mode::recluster);
}

TEST(Controller, StaleOrFutureCacheIsReclustered) {
  Controller ctl(ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b")));
  // A cache made at step 31 of a previous generation is not reused at step 12 of a new one.
  ctl.store(ctl.decide(31, 3), tagged(1));
  EXPECT_EQ(ctl.decide(12, 3).mode, Mode::recluster);
  // A cache from before the last scheduled recluster (step 31, never stored) is not reused.
  ctl.store(ctl.decide(11, 3), tagged(2));
  EXPECT_EQ(ctl.decide(30, 3).mode, Mode::reuse);
  EXPECT_EQ(ctl.decide(32, 3).mode, Mode::recluster);
  // A cache made off schedule (first run of this key at step 15) is reused within its window.
  ctl.store(ctl.decide(15, 7), tagged(3));
  EXPECT_EQ(ctl.cached_step(7), 15);
  EXPECT_EQ(ctl.decide(16, 7).mode, Mode::reuse);
  EXPECT_EQ(ctl.decide(30, 7).mode, Mode::reuse);
  EXPECT_EQ(ctl.decide(31, 7).mode, Mode::recluster);
}

TEST(Controller, HeadDensityFromProfileOrFallback) {
  ControlConfig c = ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b"));
  c.fallback_density = 0.125;
  auto profile = std::make_shared<Profile>(50, 30, 12);
  for (int h = 0; h < 12; ++h) {
    profile->set(12, 3, h, 0.01 * (h + 1));
    profile->set(2, 0, h, 0.5);
  }
  profile->set(13, 3, 0, 0.3);  // step 13 of layer 3 only has head 0
  const Controller ctl(c, profile);

  const Decision full = ctl.decide(12, 3);
  ASSERT_EQ(full.head_density.size(), 12u);
  for (int h = 0; h < 12; ++h) EXPECT_DOUBLE_EQ(full.head_density[h], 0.01 * (h + 1));
  EXPECT_TRUE(full.from_profile);

  const Decision partial = ctl.decide(13, 3);
  ASSERT_EQ(partial.head_density.size(), 12u);
  EXPECT_DOUBLE_EQ(partial.head_density[0], 0.3);
  for (int h = 1; h < 12; ++h) EXPECT_DOUBLE_EQ(partial.head_density[h], 0.125);
  EXPECT_FALSE(partial.from_profile);

  const Decision dense = ctl.decide(2, 0);  // dense decisions are filled too
  EXPECT_EQ(dense.mode, Mode::dense);
  ASSERT_EQ(dense.head_density.size(), 12u);
  for (double v : dense.head_density) EXPECT_DOUBLE_EQ(v, 0.5);
  EXPECT_TRUE(dense.from_profile);

  const Controller none(c);  // no profile: every head gets the fallback
  const Decision fb = none.decide(12, 3);
  ASSERT_EQ(fb.head_density.size(), 12u);
  for (double v : fb.head_density) EXPECT_DOUBLE_EQ(v, 0.125);
  EXPECT_FALSE(fb.from_profile);

  // A profile with more layers than the model is accepted (entries past the model are unused).
  EXPECT_NO_THROW(Controller(c, std::make_shared<Profile>(50, 40, 12)));
}

TEST(Controller, ProfileShapeMismatchIsRejected) {
  const ControlConfig c = ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b"));
  expect_invalid([&] { Controller(c, std::make_shared<Profile>(50, 30, 40)); }, {"40 heads", "12"});
  expect_invalid([&] { Controller(c, std::make_shared<Profile>(50, 20, 12)); }, {"20 layers", "30"});
}

TEST(Controller, DecideRejectsOutOfRangeArguments) {
  const Controller ctl(ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b")));
  expect_invalid([&] { ctl.decide(0, 0); }, {"step = 0", "[1, 50]"});
  expect_invalid([&] { ctl.decide(51, 0); }, {"step = 51", "[1, 50]"});
  expect_invalid([&] { ctl.decide(1, -1); }, {"layer = -1", "[0, 29]"});
  expect_invalid([&] { ctl.decide(1, 30); }, {"layer = 30", "[0, 29]"});
  expect_invalid([&] { ctl.decide(1, 0, -1); }, {"branch = -1", ">= 0"});
  expect_invalid([&] { ctl.decide(1, 0, 0, -1); }, {"expert = -1", ">= 0"});
  EXPECT_EQ(ctl.decide(50, 29, 3, 5).mode, Mode::recluster);
}

TEST(Controller, StoreRejectsDenseDecisions) {
  Controller ctl(ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b")));
  const Decision d = ctl.decide(5, 2);
  ASSERT_EQ(d.mode, Mode::dense);
  expect_invalid([&] { ctl.store(d, tagged(1)); }, {"dense", "step 5", "layer 2"});
  EXPECT_EQ(ctl.cached(2), nullptr);
  Decision forged = ctl.decide(11, 2);
  forged.layer = 30;  // a decision edited out of range is refused too
  expect_invalid([&] { ctl.store(forged, tagged(1)); }, {"layer = 30"});
}

TEST(Controller, ConstructorValidatesTheConfig) {
  using Edit = void (*)(ControlConfig&);
  const std::tuple<Edit, const char*, const char*> cases[] = {
      {[](ControlConfig& c) { c.steps = 0; }, "steps = 0", ">= 1"},
      {[](ControlConfig& c) { c.layers = 0; }, "layers = 0", ">= 1"},
      {[](ControlConfig& c) { c.heads = -2; }, "heads = -2", ">= 1"},
      {[](ControlConfig& c) { c.reuse_interval = 0; }, "reuse_interval = 0", ">= 1"},
      {[](ControlConfig& c) { c.warmup_fraction = 1.5; }, "warmup_fraction = 1.5", "[0, 1]"},
      {[](ControlConfig& c) { c.warmup_fraction = NAN; }, "warmup_fraction", "[0, 1]"},
      {[](ControlConfig& c) { c.dense_layer_fraction = -0.1; }, "dense_layer_fraction = -0.1", "[0, 1]"},
      {[](ControlConfig& c) { c.warmup_steps = 51; }, "warmup_steps = 51", "[0, 50]"},
      {[](ControlConfig& c) { c.warmup_steps = -1; }, "warmup_steps = -1", "[0, 50]"},
      {[](ControlConfig& c) { c.dense_layers = 31; }, "dense_layers = 31", "[0, 30]"},
      {[](ControlConfig& c) { c.fallback_density = 1.2; }, "fallback_density = 1.2", "[0, 1]"},
      {[](ControlConfig& c) { c.selection.top_p = 1.01; }, "top_p = 1.01", "[0, 1]"},
      {[](ControlConfig& c) { c.selection.floor_lo = -0.5; }, "floor_lo = -0.5", "[0, 1]"},
      {[](ControlConfig& c) { c.selection.floor_hi = 0.1; }, "floor_hi = 0.1", "[0.15, 1]"},
      {[](ControlConfig& c) { c.selection.floor_hi = 1.5; }, "floor_hi = 1.5", "[0.15, 1]"},
      {[](ControlConfig& c) { c.cluster.kq = 0; }, "kq = 0", ">= 1"},
      {[](ControlConfig& c) { c.cluster.kk = 0; }, "kk = 0", ">= 1"},
      {[](ControlConfig& c) { c.cluster.iterations = -1; }, "iterations = -1", ">= 0"},
  };
  for (const auto& [edit, what, range] : cases) {
    SCOPED_TRACE(what);
    ControlConfig c = ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b"));
    edit(c);
    expect_invalid([&] { Controller ctl(c); }, {what, range});
  }
  // Boundary values are valid.
  ControlConfig ok = ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b"));
  ok.selection.floor_lo = ok.selection.floor_hi = 1.0;
  ok.selection.top_p = 0.0;
  ok.cluster.iterations = 0;
  ok.warmup_steps = 50;
  EXPECT_NO_THROW(Controller ctl(ok));
}

}  // namespace
}  // namespace svoo
