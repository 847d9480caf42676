// svoo synth: writes a synthetic layer's q, k, v to a safetensors file, as input for
// `svoo attend` and `svoo cluster` (or any other tool).
#include <cstdio>

#include "common.hpp"
#include "svoo/synthetic.hpp"

namespace svoo::cli {

void add_synth_command(CLI::App& app, int& exit_code) {
  struct Options {
    SyntheticConfig synth;
    std::string output, dtype = "bf16";
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("synth", "write a synthetic video-attention layer (q, k, v) to a safetensors file");
  cmd->add_option("--output,-o", o->output, "safetensors file to write")->required();
  cmd->add_option("--frames", o->synth.frames, "latent frames")->check(CLI::PositiveNumber);
  cmd->add_option("--height", o->synth.height, "latent rows")->check(CLI::PositiveNumber);
  cmd->add_option("--width", o->synth.width, "latent columns")->check(CLI::PositiveNumber);
  cmd->add_option("--heads", o->synth.heads, "attention heads")->check(CLI::PositiveNumber);
  cmd->add_option("--dim", o->synth.dim, "head dimension")->check(CLI::PositiveNumber);
  cmd->add_option("--dtype", o->dtype, "element type")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--seed", o->synth.seed, "seed");
  cmd->add_option("--density", o->synth.target_density, "tau-density per head (one value per head)");
  cmd->callback([o, &exit_code] {
    exit_code = guarded([o] {
      SyntheticConfig c = o->synth;
      c.dtype = o->dtype == "f16" ? DType::f16 : o->dtype == "f32" ? DType::f32 : DType::bf16;
      SyntheticLayer layer = make_synthetic_layer(c);
      SafetensorsFile f;
      std::string kinds, dens;
      for (std::size_t h = 0; h < layer.kinds.size(); ++h) {
        kinds += (h ? "," : "") + std::string(head_kind_name(layer.kinds[h]));
        dens += (h ? "," : "") + std::to_string(layer.achieved_density[h]);
      }
      f.metadata = {{"grid", std::to_string(c.frames) + "x" + std::to_string(c.height) + "x" + std::to_string(c.width)},
                    {"head_kinds", kinds},
                    {"tau_density", dens}};
      f.tensors.emplace_back("q", std::move(layer.q));
      f.tensors.emplace_back("k", std::move(layer.k));
      f.tensors.emplace_back("v", std::move(layer.v));
      save_safetensors(o->output, f);
      std::printf("wrote %s: q, k, v [%d, %lld, %d] %s\n", o->output.c_str(), c.heads,
                  static_cast<long long>(c.frames) * c.height * c.width, c.dim, dtype_name(c.dtype));
      return kExitOk;
    });
  });
}

}  // namespace svoo::cli
