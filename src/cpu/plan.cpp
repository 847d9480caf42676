// plan: (q, k, policy) -> clustering (fresh or reused) -> block scores -> selection -> layout.
#include "svoo/attention_shape.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/selection.hpp"

namespace svoo::cpu {

Plan plan(const TensorView& q, const TensorView& k, const ClusterConfig& cluster_config,
          const SelectionConfig& selection_config, std::span<const double> profiled, const Clustering* reuse,
          const Anchors* anchors) {
  Plan p;
  if (reuse) {
    const AttentionShape s = check_qkv(q, k, nullptr, Device::cpu, "cpu::plan");
    check_clustering(*reuse);
    require(reuse->heads == s.heads && reuse->q_tokens == s.q_tokens && reuse->k_tokens == s.k_tokens &&
                reuse->dim == s.dim,
            ErrorKind::shape, "the cached clustering does not match the shapes of q and k");
    p.clustering = *reuse;
  } else {
    p.clustering = cluster(q, k, cluster_config, anchors);
  }
  const std::vector<float> scores = block_scores(p.clustering);
  p.selection = select_blocks(scores, p.clustering.heads, p.clustering.kq, p.clustering.kk, selection_config, profiled);
  p.layout = build_layout(p.clustering, p.selection);
  return p;
}

}  // namespace svoo::cpu
