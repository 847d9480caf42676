// svoo: command-line tool. `svoo --help` lists the commands; each has its own --help.
#include <omp.h>

#include "common.hpp"

int main(int argc, char** argv) {
  CLI::App app{"svoo: sparse video-DiT attention by offline sparsity profiling and online QK co-clustering"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "svoo 0.1.0");
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: all cores)")->check(CLI::NonNegativeNumber);
  int exit_code = svoo::cli::kExitOk;
  svoo::cli::add_demo_command(app, exit_code);
  svoo::cli::add_attend_command(app, exit_code);
  svoo::cli::add_cluster_command(app, exit_code);
  svoo::cli::add_synth_command(app, exit_code);
  svoo::cli::add_synth_capture_command(app, exit_code);
  svoo::cli::add_profile_command(app, exit_code);
  svoo::cli::add_report_command(app, exit_code);
  svoo::cli::add_presets_command(app, exit_code);
  app.parse_complete_callback([&] {
    if (threads > 0) omp_set_num_threads(threads);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? svoo::cli::kExitOk : svoo::cli::kExitUsage;
  }
  return exit_code;
}
