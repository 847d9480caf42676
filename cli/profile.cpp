// svoo profile: tau-densities of captured Q/K (docs/capture-format.md) for several inputs,
// aggregated per (step, layer, head) into a profile CSV with statistics, plus a JSON sidecar that
// records how it was measured. `svoo profile compare A B` diffs two profiles.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common.hpp"
#include "svoo/error.hpp"
#include "svoo/profiler.hpp"
#include "svoo/stability.hpp"

namespace svoo::cli {
namespace {

nlohmann::json sidecar(const std::vector<std::string>& inputs, double tau, std::int64_t rows, std::uint64_t seed,
                       const std::string& aggregate, const std::string& device) {
  nlohmann::json j = {{"tau", tau}, {"rows", rows}, {"seed", seed}, {"inputs", inputs}, {"aggregate", aggregate},
                      {"std", "sample (n - 1), 0 for one input"}};
  if (device != "cpu") j["device"] = device;  // CPU sidecars stay as before (resume compares them)
  return j;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path + ".tmp", std::ios::binary);
  f << text;
  f.close();
  require(static_cast<bool>(f), ErrorKind::io, "cannot write '" + path + ".tmp'");
  std::filesystem::rename(path + ".tmp", path);
}

}  // namespace

void add_profile_command(CLI::App& app, int& exit_code) {
  struct Options {
    std::vector<std::string> inputs;
    std::string output, aggregate = "max", device = "cpu";
    double tau = 0.95;
    std::int64_t rows = 0;
    std::uint64_t seed = 0;
    bool resume = false, quiet = false;
    std::string a, b, diff_output;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("profile", "profile captured Q/K of several inputs into a profile CSV with statistics");
  cmd->add_option("--input,-i", o->inputs, "capture safetensors, one per input (repeat)");
  cmd->add_option("--output,-o", o->output, "profile CSV to write (sidecar: OUTPUT.json)");
  cmd->add_option("--tau", o->tau, "softmax mass threshold")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--rows", o->rows, "query rows sampled per head (0: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", o->seed, "seed of the row sample");
  cmd->add_option("--aggregate", o->aggregate, "max (released) or quantile (mean + 1.645 std, clipped to [0, 1])")
      ->check(CLI::IsMember({"max", "quantile"}));
  cmd->add_option("--device", o->device,
                  "cpu (default), or cuda: the GPU tau-density kernel (bf16/f16 captures; a CUDA build and a visible GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_flag("--resume", o->resume, "keep the (step, layer)s OUTPUT already holds for the same inputs");
  cmd->add_flag("--quiet,-q", o->quiet, "no progress lines");
  auto* cmp = cmd->add_subcommand("compare", "per-entry differences between two profiles");
  cmp->add_option("a", o->a, "profile A")->required()->check(CLI::ExistingFile);
  cmp->add_option("b", o->b, "profile B")->required()->check(CLI::ExistingFile);
  cmp->add_option("--output,-o", o->diff_output, "CSV of per-entry differences (Step,Layer,Head,A,B,Diff = B - A)");

  cmp->callback([o, &exit_code] {
    exit_code = guarded([o] {
      const Profile a = load_profile_csv(o->a), b = load_profile_csv(o->b);
      const ProfileDiff d = compare_profiles(a, b);
      std::printf("entries compared: %zu (only in A: %lld, only in B: %lld)\n", d.entries.size(),
                  static_cast<long long>(d.only_a), static_cast<long long>(d.only_b));
      std::printf("mean abs diff:    %.6f\n", d.mean_abs);
      std::printf("max abs diff:     %.6f at step %d, layer %d, head %d (A %.6f, B %.6f)\n", d.max_abs, d.max_entry.step,
                  d.max_entry.layer, d.max_entry.head, d.max_entry.a, d.max_entry.b);
      std::printf("correlation:      %.6f\n", d.correlation);
      if (!o->diff_output.empty()) {
        write_text(o->diff_output, format_diff_csv(d));
        std::printf("wrote %s\n", o->diff_output.c_str());
      }
      return kExitOk;
    });
  });

  cmd->callback([o, cmd, cmp, &exit_code] {
    if (cmp->parsed()) return;  // `profile compare` ran its own callback
    exit_code = guarded([o] {
      require(!o->inputs.empty(), ErrorKind::invalid_argument, "svoo profile: give at least one --input capture");
      require(!o->output.empty(), ErrorKind::invalid_argument, "svoo profile: give --output PROFILE.csv");
      const nlohmann::json meta = sidecar(o->inputs, o->tau, o->rows, o->seed, o->aggregate, o->device);
      std::optional<Profile> previous;
      if (o->resume && std::filesystem::exists(o->output)) {
        // Resuming with other settings would mix two measurements in one file.
        const std::string side = o->output + ".json";
        require(std::filesystem::exists(side), ErrorKind::invalid_argument,
                "--resume: " + side + " is missing, so " + o->output + " cannot be checked against these settings");
        std::ifstream f(side);
        nlohmann::json old;
        try {
          old = nlohmann::json::parse(f);
        } catch (const std::exception& e) {
          fail(ErrorKind::format, side + ": " + e.what());
        }
        require(old == meta, ErrorKind::invalid_argument,
                "--resume: " + o->output + " was measured with other settings (" + old.dump() + "), now " + meta.dump());
        previous = load_profile_csv(o->output);
      }
      std::vector<SafetensorsFile> captures;
      for (const auto& p : o->inputs) {
        if (!o->quiet) std::fprintf(stderr, "loading %s\n", p.c_str());
        captures.push_back(load_safetensors(p));
      }
      write_text(o->output + ".json", meta.dump(1) + "\n");
      ProfilerOptions po;
      po.tau = o->tau;
      po.rows = {o->rows, o->seed};
      po.aggregate = o->aggregate == "quantile" ? Aggregate::quantile : Aggregate::max;
      po.device = o->device == "cuda" ? Device::cuda : Device::cpu;
      int computed = 0, skipped = 0;
      const double t0 = now_ms();
      const Profile p = profile_captures(
          captures, o->inputs, po, previous ? &*previous : nullptr,
          [&](const Profile& so_far, const CaptureSlot& s, int pos, int total, bool skip) {
            (skip ? skipped : computed)++;
            if (!skip) save_profile_csv_atomic(o->output, so_far);  // an interrupted run keeps its work
            if (!o->quiet)
              std::fprintf(stderr, "[%d/%d] step %d layer %d: %s (%.1f s)\n", pos, total, s.step, s.layer,
                           skip ? "already in the output, skipped" : "done", (now_ms() - t0) / 1000);
          });
      save_profile_csv_atomic(o->output, p);
      std::printf("wrote %s: %d steps x %d layers x %d heads, %zu input(s), %d (step, layer) computed, %d skipped, mean density %.4f\n",
                  o->output.c_str(), p.steps(), p.layers(), p.heads(), o->inputs.size(), computed, skipped, p.mean_density());
      return kExitOk;
    });
  });
}

}  // namespace svoo::cli
