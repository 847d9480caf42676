// svoo report: the input-stability analysis of one or more profiles (svoo/stability.hpp),
// written as report.json and a self-contained report.html.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common.hpp"
#include "svoo/error.hpp"
#include "svoo/report.hpp"

namespace svoo::cli {

void add_report_command(CLI::App& app, int& exit_code) {
  struct Options {
    std::vector<std::string> profiles;
    std::string dir = ".", format = "html", title;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("report", "input-stability report of profiles (report.json, report.html)");
  cmd->add_option("profiles", o->profiles,
                  "one multi-input profile (statistics columns, count >= 2), or single-input profiles of one model")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--output-dir,-d", o->dir, "directory for report.json and report.html (created)");
  cmd->add_option("--format", o->format, "html (writes report.html and report.json) or json (report.json only)")
      ->check(CLI::IsMember({"html", "json"}));
  cmd->add_option("--title", o->title, "page title (default: the first profile's file name)");
  cmd->callback([o, &exit_code] {
    exit_code = guarded([o] {
      std::vector<Profile> profiles;
      std::vector<std::string> names;
      for (const auto& p : o->profiles) {
        profiles.push_back(load_profile_csv(p));
        names.push_back(std::filesystem::path(p).filename().string());
      }
      const StabilityReport r = analyze_stability(stability_data(profiles, names));
      std::filesystem::create_directories(o->dir);
      const auto write = [](const std::filesystem::path& path, const std::string& text) {
        std::ofstream f(path, std::ios::binary);
        f << text;
        f.close();
        require(static_cast<bool>(f), ErrorKind::io, "cannot write '" + path.string() + "'");
        std::printf("wrote %s\n", path.string().c_str());
      };
      write(std::filesystem::path(o->dir) / "report.json", format_report_json(r));
      if (o->format == "html")
        write(std::filesystem::path(o->dir) / "report.html",
              format_report_html(r, o->title.empty() ? "svoo stability report: " + names[0] : o->title));
      std::printf("input stability: %s\n",
                  r.stable ? (*r.stable ? "YES" : "NO") : (r.inputs < 2 ? "cannot be decided from one input" : "undecided"));
      if (r.ratio)
        std::printf("within-entry std across inputs %.4g, std across layers %.4g, ratio %.4g (stable < %.2g)\n",
                    *r.within_std, r.std_across_layers, *r.ratio, kStableRatio);
      if (r.anova) std::printf("ICC(1) %.4f, between-entry variance share %.4f\n", r.anova->icc, r.anova->between_share);
      std::printf("std across layers %.4g, across steps %.4g, mean density %.4g\n", r.std_across_layers,
                  r.std_across_steps, r.mean_density);
      return kExitOk;
    });
  });
}

}  // namespace svoo::cli
