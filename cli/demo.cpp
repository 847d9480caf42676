// svoo demo: one Wan2.1-like layer from the synthetic workload, end to end on the CPU. Prints per
// head and overall: block density, attention recall of co-clustering and of the k-means baseline
// (with the same rule, and at the same block density), output error against dense attention, and
// the time of dense and sparse attention.
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common.hpp"
#include "demo_backend.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"
#include "svoo/profile.hpp"
#include "svoo/selection.hpp"
#include "svoo/synthetic.hpp"

namespace svoo::cli {
namespace {

struct DemoOptions {
  SyntheticConfig synth;
  std::string dtype = "bf16";
  ClusterOptions cluster;
  PolicyOptions policy;
  std::int64_t recall_rows = 512;
  std::string json;
  std::string device = "cpu";
  bool quiet = false;
};

// Block density of one head's selection rows (keep: [kq, kk]) from the cluster sizes.
double head_density(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_sizes, int kq,
                    int kk, double pairs) {
  double kept = 0;
  for (int i = 0; i < kq; ++i) {
    if (q_sizes[i] == 0) continue;
    double row = 0;
    for (int j = 0; j < kk; ++j) row += keep[i * kk + j] ? k_sizes[j] : 0;
    kept += row * q_sizes[i];
  }
  return kept / pairs;
}

// The k-means selection whose block density matches `target` for one head: bisection on top-p
// (density grows with p), other settings as in `config`.
Selection match_density(const std::vector<float>& scores, const Clustering& c, std::int64_t h,
                        const SelectionConfig& config, double profiled, double target) {
  const std::size_t per_head = static_cast<std::size_t>(c.kq) * c.kk;
  const std::span<const float> head_scores(scores.data() + h * per_head, per_head);
  const std::vector<double> prof{profiled};
  const double pairs = static_cast<double>(c.q_tokens) * static_cast<double>(c.k_tokens);
  double lo = 0.0, hi = 1.0;
  SelectionConfig cfg = config;
  for (int it = 0; it < 30; ++it) {
    cfg.top_p = 0.5 * (lo + hi);
    const Selection s = select_blocks(head_scores, 1, c.kq, c.kk, cfg, prof);
    const double d = head_density(s.keep.data(), c.q_sizes.data() + h * c.kq, c.k_sizes.data() + h * c.kk, c.kq,
                                  c.kk, pairs);
    (d < target ? lo : hi) = cfg.top_p;
  }
  cfg.top_p = hi;
  return select_blocks(head_scores, 1, c.kq, c.kk, cfg, prof);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}

int run_demo(const DemoOptions& o) {
  SyntheticConfig sc = o.synth;
  sc.dtype = o.dtype == "f16" ? DType::f16 : o.dtype == "f32" ? DType::f32 : DType::bf16;
  if (!o.policy.profile.empty()) sc.target_density = o.policy.head_density(sc.heads);
  Progress progress(o.device == "cuda" ? 7 : 6, o.quiet);

  progress.stage("synthetic layer " + std::to_string(sc.heads) + " heads x " +
                 std::to_string(static_cast<long long>(sc.frames) * sc.height * sc.width) + " tokens, calibrating");
  const SyntheticLayer layer = make_synthetic_layer(sc);
  const TensorView q = layer.q.view(), k = layer.k.view();
  const std::int64_t H = q.shape[0], N = q.shape[1], D = q.shape[2];
  // The head's own tau-density stands in for its profile entry: it is what the offline stage
  // would have measured.
  const std::vector<double> profiled = layer.achieved_density;
  const ClusterConfig ccfg = o.cluster.resolve(N, N);
  const SelectionConfig scfg = o.policy.selection();
  const DemoRun run = o.device == "cuda" ? run_demo_cuda(layer, ccfg, scfg, profiled, progress)
                                         : run_demo_cpu(layer, ccfg, scfg, profiled, progress);
  const Clustering& co = run.co;
  const Clustering& km = run.km;
  const Selection& co_sel = run.co_sel;
  const Selection& km_sel = run.km_sel;
  const std::vector<double> co_density = block_density(co, co_sel), km_density = block_density(km, km_sel);
  Selection km_eq = keep_all(H, ccfg.kq, ccfg.kk);
  for (std::int64_t h = 0; h < H; ++h) {
    const Selection s = match_density(run.km_scores, km, h, scfg, profiled[h], co_density[h]);
    std::copy(s.keep.begin(), s.keep.end(), km_eq.keep.begin() + h * ccfg.kq * ccfg.kk);
  }
  const std::vector<double> km_eq_density = block_density(km, km_eq);

  progress.stage("recall on " + std::to_string(std::min(o.recall_rows, N)) + " sampled rows per head");
  const RowSample sample{o.recall_rows, 1};
  const auto co_recall = attention_recall(q, k, co, co_sel, sample);
  const auto km_recall = attention_recall(q, k, km, km_sel, sample);
  const auto km_eq_recall = attention_recall(q, k, km, km_eq, sample);
  const auto err = output_error(run.sparse.view(), run.dense.view());
  const OutputError total = output_error_total(run.sparse.view(), run.dense.view());
  const double dense_ms = run.dense_ms, cluster_ms = run.cluster_ms, select_ms = run.select_ms,
               sparse_ms = run.sparse_ms;
  progress.done();

  std::printf("svoo demo: synthetic Wan2.1-like layer, %lld heads x %lld tokens (%d x %d x %d) x %lld, %s\n",
              (long long)H, (long long)N, sc.frames, sc.height, sc.width, (long long)D, dtype_name(sc.dtype));
  std::printf("policy: %s rule, top-p %.2f, floor clip [%.2f, %.2f]; Kq %d, Kk %d, T %d%s\n",
              selection_rule_name(scfg.rule), scfg.top_p, scfg.floor_lo, scfg.floor_hi, ccfg.kq, ccfg.kk,
              ccfg.iterations,
              ccfg.query_align > 1 ? (", query clusters aligned to " + std::to_string(ccfg.query_align) + " rows").c_str()
                                   : "");
  std::printf("\n%4s %-14s %7s | %7s %7s | %7s %7s | %7s %7s | %8s %8s\n", "head", "kind", "tau95", "density",
              "recall", "km dens", "km rec", "km=dens", "km rec", "rel L2", "cosine");
  std::printf("%4s %-14s %7s | %15s | %15s | %15s | %17s\n", "", "", "density", "co-clustering", "k-means, same rule",
              "k-means, =density", "output vs dense");
  for (std::int64_t h = 0; h < H; ++h)
    std::printf("%4lld %-14s %7.3f | %7.3f %7.3f | %7.3f %7.3f | %7.3f %7.3f | %8.4f %8.5f\n", (long long)h,
                head_kind_name(layer.kinds[h]), layer.achieved_density[h], co_density[h], co_recall[h], km_density[h],
                km_recall[h], km_eq_density[h], km_eq_recall[h], err[h].relative_l2, err[h].cosine);
  std::printf("%4s %-14s %7.3f | %7.3f %7.3f | %7.3f %7.3f | %7.3f %7.3f | %8.4f %8.5f\n", "mean", "",
              mean(layer.achieved_density), mean(co_density), mean(co_recall), mean(km_density), mean(km_recall),
              mean(km_eq_density), mean(km_eq_recall), total.relative_l2, total.cosine);
  std::printf("\nrecall at equal block density: co-clustering %.1f %% vs k-means %.1f %%\n", 100 * mean(co_recall),
              100 * mean(km_eq_recall));
  const bool gpu = o.device == "cuda";
  std::printf("%s time: dense attention %.*f ms; svoo: clustering %.*f ms + selection/layout %.*f ms + sparse "
              "attention %.*f ms (attention alone %.2fx faster than %s dense)\n",
              run.device.c_str(), gpu ? 2 : 0, dense_ms, gpu ? 2 : 0, cluster_ms, gpu ? 2 : 0, select_ms, gpu ? 2 : 0,
              sparse_ms, dense_ms / sparse_ms, gpu ? "svoo's own" : "the same backend's");

  if (!o.json.empty()) {
    nlohmann::json j;
    j["heads"] = H, j["tokens"] = N, j["dim"] = D, j["kq"] = ccfg.kq, j["kk"] = ccfg.kk;
    j["tau_density"] = layer.achieved_density;
    j["coclustering"] = {{"density", co_density}, {"recall", co_recall}};
    j["kmeans_same_rule"] = {{"density", km_density}, {"recall", km_recall}};
    j["kmeans_equal_density"] = {{"density", km_eq_density}, {"recall", km_eq_recall}};
    std::vector<double> rel, cos;
    for (const auto& e : err) rel.push_back(e.relative_l2), cos.push_back(e.cosine);
    j["relative_l2"] = rel, j["cosine"] = cos;
    j["ms"] = {{"dense", dense_ms}, {"cluster", cluster_ms}, {"select_layout", select_ms}, {"sparse", sparse_ms}};
    j["device"] = run.device;
    std::ofstream f(o.json);
    require(f.good(), ErrorKind::io, "cannot write " + o.json);
    f << j.dump(1) << "\n";
  }
  return kExitOk;
}

}  // namespace

void add_demo_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<DemoOptions>();
  auto* cmd = app.add_subcommand("demo", "run svoo on one synthetic Wan2.1-like layer and compare with dense");
  cmd->add_option("--frames", opts->synth.frames, "latent frames")->check(CLI::PositiveNumber);
  cmd->add_option("--height", opts->synth.height, "latent rows")->check(CLI::PositiveNumber);
  cmd->add_option("--width", opts->synth.width, "latent columns")->check(CLI::PositiveNumber);
  cmd->add_option("--heads", opts->synth.heads, "attention heads")->check(CLI::PositiveNumber);
  cmd->add_option("--dim", opts->synth.dim, "head dimension")->check(CLI::PositiveNumber);
  cmd->add_option("--dtype", opts->dtype, "element type of q, k, v")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--data-seed", opts->synth.seed, "seed of the synthetic workload");
  cmd->add_option("--recall-rows", opts->recall_rows, "sampled query rows per head for recall (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--json", opts->json, "also write the numbers to this JSON file");
  cmd->add_flag("--quiet", opts->quiet, "no progress lines");
  cmd->add_option("--device", opts->device, "backend: cpu, or cuda (bf16/f16; try --frames 21 --height 45 --width 80, "
                                            "Wan2.1 720p)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  opts->cluster.add_to(*cmd);
  opts->policy.add_to(*cmd);
  cmd->callback([opts, &exit_code] { exit_code = guarded([opts] { return run_demo(*opts); }); });
}

}  // namespace svoo::cli
