// `svoo demo` on the CPU backend.
#include "demo_backend.hpp"
#include "svoo/cpu.hpp"
#include "svoo/selection.hpp"

namespace svoo::cli {

DemoRun run_demo_cpu(const SyntheticLayer& layer, const ClusterConfig& ccfg, const SelectionConfig& scfg,
                     const std::vector<double>& profiled, Progress& progress) {
  const TensorView q = layer.q.view(), k = layer.k.view(), v = layer.v.view();
  const std::int64_t H = q.shape[0], N = q.shape[1], D = q.shape[2];
  DemoRun r;
  r.device = "CPU";
  progress.stage("dense attention");
  r.dense = HostTensor(DType::f32, {H, N, D});
  r.sparse = HostTensor(DType::f32, {H, N, D});
  double t0 = now_ms();
  cpu::dense_attention(q, k, v, r.dense.view());
  r.dense_ms = now_ms() - t0;

  progress.stage("co-clustering plan (Kq " + std::to_string(ccfg.kq) + ", Kk " + std::to_string(ccfg.kk) + ")");
  t0 = now_ms();
  r.co = cpu::cluster(q, k, ccfg);
  r.cluster_ms = now_ms() - t0;
  t0 = now_ms();
  r.co_sel = select_blocks(cpu::block_scores(r.co), H, ccfg.kq, ccfg.kk, scfg, profiled);
  const BlockLayout layout = build_layout(r.co, r.co_sel);
  r.select_ms = now_ms() - t0;

  progress.stage("sparse attention");
  t0 = now_ms();
  cpu::sparse_attention(q, k, v, layout, r.sparse.view());
  r.sparse_ms = now_ms() - t0;

  progress.stage("k-means baseline (same anchors)");
  ClusterConfig kcfg = ccfg;
  kcfg.method = ClusterMethod::kmeans;
  r.km = cpu::cluster(q, k, kcfg);
  r.km_scores = cpu::block_scores(r.km);
  r.km_sel = select_blocks(r.km_scores, H, ccfg.kq, ccfg.kk, scfg, profiled);
  return r;
}

}  // namespace svoo::cli
