// svoo presets: the released defaults of every supported model (spec 2.5).
#include <cstdio>

#include "common.hpp"

namespace svoo::cli {

void add_presets_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("presets", "list the model presets and their released defaults");
  cmd->callback([&exit_code] {
    exit_code = guarded([] {
      std::printf("%-17s %-22s %9s %5s %6s %5s %5s %13s %6s %s\n", "preset", "model", "exp x lay", "heads", "steps",
                  "warm", "p", "floor clip", "reuse", "reference profile");
      for (const ModelPreset& p : model_presets())
        std::printf("%-17s %-22s %5dx%-2d %5d %6d %5d %5.2f  [%.2f, %.2f] %6d %s\n", p.name.c_str(),
                    p.description.c_str(), p.experts, p.layers, p.heads, p.steps, p.warmup_steps, p.top_p, p.floor_lo,
                    p.floor_hi, p.reuse_interval, p.reference_profile.c_str());
      return kExitOk;
    });
  });
}

}  // namespace svoo::cli
