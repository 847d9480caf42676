// svoo attend: sparse (or dense) attention of Q/K/V read from a safetensors file; writes the
// output and prints block density, recall and the error against dense attention.
#include <cmath>
#include <cstdio>

#include "common.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"
#include "svoo/selection.hpp"

namespace svoo::cli {
namespace {

struct AttendOptions {
  std::string input, output, q = "q", k = "k", v = "v";
  bool dense = false, compare = true, lse = false, quiet = false;
  std::int64_t recall_rows = 256;
  ClusterOptions cluster;
  PolicyOptions policy;
};

int run_attend(const AttendOptions& o) {
  Progress progress(o.dense ? 2 : (o.compare ? 5 : 3), o.quiet);
  progress.stage("reading " + o.input);
  const SafetensorsFile in = load_safetensors(o.input);
  const TensorView q = attention_input(in, o.q, o.input), k = attention_input(in, o.k, o.input),
                   v = attention_input(in, o.v, o.input);
  const std::int64_t H = q.shape[0], Nq = q.shape[1], Nk = k.shape[1], D = q.shape[2];
  SafetensorsFile out;
  out.tensors.emplace_back("out", HostTensor(q.dtype, {H, Nq, D}));
  HostTensor lse(DType::f32, {H, Nq});
  float* lse_ptr = o.lse ? lse.data<float>() : nullptr;
  TensorView out_view = out.tensors[0].second.view();

  if (o.dense) {
    progress.stage("dense attention");
    const double t0 = now_ms();
    cpu::dense_attention(q, k, v, out_view, lse_ptr);
    progress.done();
    std::printf("dense attention: %lld heads x %lld queries x %lld keys x %lld, %.0f ms\n", (long long)H,
                (long long)Nq, (long long)Nk, (long long)D, now_ms() - t0);
    out.metadata["svoo"] = "dense";
  } else {
    progress.stage("plan");
    const ClusterConfig ccfg = o.cluster.resolve(Nq, Nk);
    const SelectionConfig scfg = o.policy.selection();
    double t0 = now_ms();
    const cpu::Plan plan = cpu::plan(q, k, ccfg, scfg, o.policy.head_density(H));
    const double plan_ms = now_ms() - t0;
    progress.stage("sparse attention");
    t0 = now_ms();
    cpu::sparse_attention(q, k, v, plan.layout, out_view, lse_ptr);
    const double sparse_ms = now_ms() - t0;
    const auto density = block_density(plan.clustering, plan.selection);
    std::vector<double> recall;
    std::vector<OutputError> err;
    double dense_ms = 0;
    if (o.compare) {
      progress.stage("recall on sampled rows");
      recall = attention_recall(q, k, plan.clustering, plan.selection, {o.recall_rows, 1});
      progress.stage("dense attention for comparison");
      HostTensor dense(DType::f32, {H, Nq, D});
      t0 = now_ms();
      cpu::dense_attention(q, k, v, dense.view());
      dense_ms = now_ms() - t0;
      err = output_error(out_view, dense.view());
    }
    progress.done();
    std::printf("%s, Kq %d, Kk %d, T %d; %s rule, top-p %.2f, floor clip [%.2f, %.2f]\n",
                cluster_method_name(ccfg.method), ccfg.kq, ccfg.kk, ccfg.iterations, selection_rule_name(scfg.rule),
                scfg.top_p, scfg.floor_lo, scfg.floor_hi);
    std::printf("%4s %8s", "head", "density");
    if (o.compare) std::printf(" %8s %9s %9s", "recall", "rel L2", "cosine");
    std::printf("\n");
    double mean_d = 0;
    for (std::int64_t h = 0; h < H; ++h) {
      std::printf("%4lld %8.4f", (long long)h, density[h]);
      if (o.compare) std::printf(" %8.4f %9.5f %9.6f", recall[h], err[h].relative_l2, err[h].cosine);
      std::printf("\n");
      mean_d += density[h] / H;
    }
    std::printf("mean density %.4f; plan %.0f ms, sparse attention %.0f ms", mean_d, plan_ms, sparse_ms);
    if (o.compare) std::printf(", dense attention %.0f ms", dense_ms);
    std::printf("\n");
    out.metadata["svoo"] = "sparse";
    out.metadata["mean_block_density"] = std::to_string(mean_d);
  }
  if (o.lse) out.tensors.emplace_back("lse", std::move(lse));
  save_safetensors(o.output, out);
  std::printf("wrote %s\n", o.output.c_str());
  return kExitOk;
}

}  // namespace

void add_attend_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<AttendOptions>();
  auto* cmd = app.add_subcommand("attend", "attention of Q/K/V from a safetensors file, sparse by default");
  cmd->add_option("--input,-i", opts->input, "safetensors file holding q, k, v [heads, tokens, head_dim]")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--output,-o", opts->output, "safetensors file to write: 'out' (and 'lse')")->required();
  cmd->add_option("--q", opts->q, "name of the query tensor");
  cmd->add_option("--k", opts->k, "name of the key tensor");
  cmd->add_option("--v", opts->v, "name of the value tensor");
  cmd->add_flag("--dense", opts->dense, "dense attention instead of svoo");
  cmd->add_flag("!--no-compare", opts->compare, "skip recall and the comparison with dense attention");
  cmd->add_flag("--lse", opts->lse, "also write the log-sum-exp per row as 'lse' [heads, tokens] f32");
  cmd->add_option("--recall-rows", opts->recall_rows, "sampled query rows per head for recall (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--quiet", opts->quiet, "no progress lines");
  opts->cluster.add_to(*cmd);
  opts->policy.add_to(*cmd);
  cmd->callback([opts, &exit_code] { exit_code = guarded([opts] { return run_attend(*opts); }); });
}

}  // namespace svoo::cli
