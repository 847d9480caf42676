// svoo cluster: co-clustering (or the k-means baseline) of Q/K from a safetensors file; writes
// labels, centroids and sizes per head.
#include <cstdio>
#include <cstring>

#include "common.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"

namespace svoo::cli {
namespace {

struct ClusterCmdOptions {
  std::string input, output, anchors, q = "q", k = "k";
  bool quiet = false;
  ClusterOptions cluster;
};

template <class T>
HostTensor tensor_of(DType dtype, std::vector<std::int64_t> shape, const std::vector<T>& values) {
  HostTensor t(dtype, std::move(shape));
  std::memcpy(t.bytes(), values.data(), values.size() * sizeof(T));
  return t;
}

// Reads an index tensor [heads, clusters] of I32 or I64 into int32.
std::vector<std::int32_t> read_indices(const SafetensorsFile& f, const std::string& name, std::int64_t heads,
                                       int clusters, const std::string& path) {
  const HostTensor& t = f.at(name);
  require(t.shape() == std::vector<std::int64_t>{heads, clusters}, ErrorKind::shape,
          path + ": '" + name + "' must have shape [" + std::to_string(heads) + ", " + std::to_string(clusters) + "]");
  require(t.dtype() == DType::i32 || t.dtype() == DType::i64, ErrorKind::dtype,
          path + ": '" + name + "' must be I32 or I64, got " + dtype_name(t.dtype()));
  std::vector<std::int32_t> out(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const std::int64_t x = t.dtype() == DType::i32 ? t.data<std::int32_t>()[i] : t.data<std::int64_t>()[i];
    require(x >= 0 && x <= INT32_MAX, ErrorKind::invalid_argument,
            path + ": '" + name + "' holds a negative or huge index " + std::to_string(x));
    out[i] = static_cast<std::int32_t>(x);
  }
  return out;
}

int run_cluster(const ClusterCmdOptions& o) {
  Progress progress(2, o.quiet);
  progress.stage("reading " + o.input);
  const SafetensorsFile in = load_safetensors(o.input);
  const TensorView q = attention_input(in, o.q, o.input), k = attention_input(in, o.k, o.input);
  const std::int64_t H = q.shape[0], Nq = q.shape[1], Nk = k.shape[1], D = q.shape[2];
  ClusterConfig cfg = o.cluster.resolve(Nq, Nk);
  Anchors anchors;
  if (!o.anchors.empty()) {
    const SafetensorsFile af = load_safetensors(o.anchors);
    const HostTensor& qa = af.at("q_anchors");
    const HostTensor& ka = af.at("k_anchors");
    require(qa.shape().size() == 2 && ka.shape().size() == 2, ErrorKind::shape,
            o.anchors + ": q_anchors and k_anchors must be [heads, clusters]");
    // The anchor file fixes the cluster counts.
    cfg.kq = static_cast<int>(qa.shape()[1]);
    cfg.kk = static_cast<int>(ka.shape()[1]);
    anchors.heads = H, anchors.kq = cfg.kq, anchors.kk = cfg.kk;
    anchors.q = read_indices(af, "q_anchors", H, cfg.kq, o.anchors);
    anchors.k = read_indices(af, "k_anchors", H, cfg.kk, o.anchors);
  }
  progress.stage(std::string(cluster_method_name(cfg.method)) + ", Kq " + std::to_string(cfg.kq) + ", Kk " +
                 std::to_string(cfg.kk));
  const double t0 = now_ms();
  const Clustering c = cpu::cluster(q, k, cfg, o.anchors.empty() ? nullptr : &anchors);
  const double ms = now_ms() - t0;
  progress.done();
  SafetensorsFile out;
  out.tensors.emplace_back("q_labels", tensor_of(DType::i32, {H, Nq}, c.q_labels));
  out.tensors.emplace_back("k_labels", tensor_of(DType::i32, {H, Nk}, c.k_labels));
  out.tensors.emplace_back("q_centroids", tensor_of(DType::f32, {H, cfg.kq, D}, c.q_centroids));
  out.tensors.emplace_back("k_centroids", tensor_of(DType::f32, {H, cfg.kk, D}, c.k_centroids));
  out.tensors.emplace_back("q_sizes", tensor_of(DType::i32, {H, cfg.kq}, c.q_sizes));
  out.tensors.emplace_back("k_sizes", tensor_of(DType::i32, {H, cfg.kk}, c.k_sizes));
  out.metadata = {{"method", cluster_method_name(cfg.method)},
                  {"kq", std::to_string(cfg.kq)},
                  {"kk", std::to_string(cfg.kk)},
                  {"iterations", std::to_string(cfg.iterations)},
                  {"seed", o.anchors.empty() ? std::to_string(cfg.seed) : "explicit anchors"}};
  save_safetensors(o.output, out);
  int empty_q = 0, empty_k = 0;
  for (auto s : c.q_sizes) empty_q += s == 0;
  for (auto s : c.k_sizes) empty_k += s == 0;
  std::printf("%s: %lld heads, %lld queries into %d clusters (%d empty), %lld keys into %d clusters (%d empty), "
              "%.0f ms\nwrote %s\n",
              cluster_method_name(cfg.method), (long long)H, (long long)Nq, cfg.kq, empty_q, (long long)Nk, cfg.kk,
              empty_k, ms, o.output.c_str());
  return kExitOk;
}

}  // namespace

void add_cluster_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<ClusterCmdOptions>();
  auto* cmd = app.add_subcommand("cluster", "cluster Q and K; write labels, centroids and sizes");
  cmd->add_option("--input,-i", opts->input, "safetensors file holding q, k [heads, tokens, head_dim]")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--output,-o", opts->output, "safetensors file to write")->required();
  cmd->add_option("--anchors", opts->anchors,
                  "safetensors file with q_anchors [heads, kq] and k_anchors [heads, kk] (row indices); "
                  "sets kq and kk")
      ->check(CLI::ExistingFile);
  cmd->add_option("--q", opts->q, "name of the query tensor");
  cmd->add_option("--k", opts->k, "name of the key tensor");
  cmd->add_flag("--quiet", opts->quiet, "no progress lines");
  opts->cluster.add_to(*cmd);
  cmd->callback([opts, &exit_code] { exit_code = guarded([opts] { return run_cluster(*opts); }); });
}

}  // namespace svoo::cli
