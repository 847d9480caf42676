// The part of `svoo demo` that depends on the backend: cluster, select, attend (sparse and dense)
// one synthetic layer, and time it. Measures are then computed on the host, the same for both.
#pragma once

#include <string>
#include <vector>

#include "common.hpp"
#include "svoo/clustering.hpp"
#include "svoo/synthetic.hpp"

namespace svoo::cli {

struct DemoRun {
  Clustering co, km;            // co-clustering and the k-means baseline (same anchors)
  Selection co_sel, km_sel;     // the policy's selection for each
  std::vector<float> km_scores; // k-means block scores, to match densities
  HostTensor sparse, dense;     // outputs [heads, tokens, dim]
  double dense_ms = 0, cluster_ms = 0, select_ms = 0, sparse_ms = 0;
  std::string device;
};

DemoRun run_demo_cpu(const SyntheticLayer& layer, const ClusterConfig& ccfg, const SelectionConfig& scfg,
                     const std::vector<double>& profiled, Progress& progress);

// Throws Error(unsupported) when the build has no CUDA backend or no GPU is visible.
DemoRun run_demo_cuda(const SyntheticLayer& layer, const ClusterConfig& ccfg, const SelectionConfig& scfg,
                      const std::vector<double>& profiled, Progress& progress);

}  // namespace svoo::cli
