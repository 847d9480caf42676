// Shared pieces of the svoo command-line tool: option groups, progress lines, timing, tables.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <functional>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "svoo/clustering.hpp"
#include "svoo/control.hpp"
#include "svoo/safetensors.hpp"
#include "svoo/tensor.hpp"

namespace svoo::cli {

// Exit codes of every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  // svoo::Error: bad input, unreadable file, ...
inline constexpr int kExitUsage = 2;  // command-line syntax

// Clustering options (--kq, --kk, --iterations, --seed, --method). kq/kk 0 = scale with tokens.
struct ClusterOptions {
  int kq = 0, kk = 0, iterations = 2;
  int align_queries = 0, align_candidates = 8, align_passes = ClusterConfig{}.align_passes;
  std::uint64_t seed = 0;
  std::string method = "coclustering";
  void add_to(CLI::App& app);
  // Resolves the "auto" counts: tokens/300 and tokens/75, the Wan 720p ratios (75,600 tokens
  // over 256 and 1024 clusters), at least 1.
  ClusterConfig resolve(std::int64_t q_tokens, std::int64_t k_tokens) const;
};

// Selection policy: a preset's defaults, overridden by explicit options; per-head floors from a
// profile at (step, layer) or a fallback density.
struct PolicyOptions {
  std::string preset = "wan2.1-t2v-1.3b";
  std::string profile;
  int step = 1, layer = 0;
  std::string rule = "released";
  CLI::Option *top_p = nullptr, *floor_lo = nullptr, *floor_hi = nullptr, *cap = nullptr;
  double top_p_v = 0, floor_lo_v = 0, floor_hi_v = 0, cap_v = 0;
  double fallback = 0.10;
  void add_to(CLI::App& app);
  SelectionConfig selection() const;
  // Per head: the profile's density at (step, layer), or the fallback when no profile is given.
  std::vector<double> head_density(std::int64_t heads) const;
};

// One line per stage on stderr, with elapsed time, so long runs show progress.
class Progress {
 public:
  explicit Progress(int stages, bool quiet) : stages_(stages), quiet_(quiet) {}
  void stage(const std::string& what);
  void done();

 private:
  int stages_, current_ = 0;
  bool quiet_, open_ = false;
  std::chrono::steady_clock::time_point start_;
};

double now_ms();

// Reads a [heads, tokens, dim] floating tensor from a file (a leading batch dimension of 1 is
// dropped); the error names the file, the tensor and the shape found.
TensorView attention_input(const SafetensorsFile& file, const std::string& name, const std::string& path);

// Wraps a command so that svoo::Error and other exceptions become messages and exit codes.
int guarded(const std::function<int()>& body);

void add_demo_command(CLI::App& app, int& exit_code);
void add_attend_command(CLI::App& app, int& exit_code);
void add_cluster_command(CLI::App& app, int& exit_code);
void add_presets_command(CLI::App& app, int& exit_code);
void add_synth_command(CLI::App& app, int& exit_code);
void add_synth_capture_command(CLI::App& app, int& exit_code);
void add_profile_command(CLI::App& app, int& exit_code);
void add_report_command(CLI::App& app, int& exit_code);

}  // namespace svoo::cli
