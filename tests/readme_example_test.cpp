// The README's library example, compiled and run over a short simulated generation, so that the
// README stays true.
#include <gtest/gtest.h>

#include <memory>

#include "svoo/control.hpp"
#include "svoo/cpu.hpp"
#include "test_util.hpp"

namespace svoo {
namespace {

TEST(ReadmeExample, RunsAcrossStepsWithDenseReclusterAndReuse) {
  const std::int64_t H = 12, N = 300, D = 32;
  auto qt = test::random_tensor(DType::bf16, {H, N, D}, 1), kt = test::random_tensor(DType::bf16, {H, N, D}, 2),
       vt = test::random_tensor(DType::bf16, {H, N, D}, 3);
  HostTensor ot(DType::bf16, {H, N, D});
  const TensorView q = qt.view(), k = kt.view(), v = vt.view(), out = ot.view();
  std::shared_ptr<const Profile> profile;  // none: fallback density
  ControlConfig config = ControlConfig::from_preset(find_preset("wan2.1-t2v-1.3b"));
  config.cluster.kq = 4;
  config.cluster.kk = 16;
  int modes[3] = {0, 0, 0};
  const int layer = 3;
  for (int step = 1; step <= 50; ++step)
    for (int cfg_branch = 0; cfg_branch < 2; ++cfg_branch) {
      // --- as in the README ---
      svoo::Controller& control = *[&] {
        static std::unique_ptr<Controller> c;
        if (!c) c = std::make_unique<Controller>(config, profile);
        return c.get();
      }();
      auto d = control.decide(step, layer, /*branch=*/cfg_branch);
      if (d.mode == svoo::Mode::dense) {
        svoo::cpu::dense_attention(q, k, v, out);
      } else {
        const auto& cc = control.config();
        auto plan = svoo::cpu::plan(q, k, cc.cluster, cc.selection, d.head_density,
                                    d.mode == svoo::Mode::reuse ? control.cached(layer, cfg_branch) : nullptr);
        if (d.mode == svoo::Mode::recluster) control.store(d, plan.clustering);
        svoo::cpu::sparse_attention(q, k, v, plan.layout, out);
      }
      // ---
      ++modes[static_cast<int>(d.mode)];
    }
  EXPECT_EQ(modes[static_cast<int>(Mode::dense)], 2 * 10);
  EXPECT_EQ(modes[static_cast<int>(Mode::recluster)], 2 * 2);  // steps 11 and 31
  EXPECT_EQ(modes[static_cast<int>(Mode::reuse)], 2 * 38);
}

}  // namespace
}  // namespace svoo
