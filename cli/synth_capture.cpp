// svoo synth-capture: one synthetic "input" in the profiler's capture layout
// (docs/capture-format.md). Several seeds give several inputs; --jitter makes the per-head
// densities depend on the seed (an input-unstable case for the stability report).
#include <cstdio>

#include "common.hpp"
#include "svoo/synthetic_capture.hpp"

namespace svoo::cli {

void add_synth_capture_command(CLI::App& app, int& exit_code) {
  struct Options {
    SyntheticCaptureConfig c;
    std::string output, dtype = "bf16";
  };
  auto o = std::make_shared<Options>();
  o->c.layer.frames = 2;
  o->c.layer.height = 8;
  o->c.layer.width = 12;
  o->c.layer.heads = 4;
  o->c.layer.dim = 32;
  auto* cmd = app.add_subcommand("synth-capture", "write a synthetic capture (q.s{step}.l{layer}, k.s{step}.l{layer}) for svoo profile");
  cmd->add_option("--output,-o", o->output, "safetensors file to write")->required();
  cmd->add_option("--steps", o->c.steps, "denoising steps")->check(CLI::PositiveNumber);
  cmd->add_option("--layers", o->c.layers, "layers")->check(CLI::PositiveNumber);
  cmd->add_option("--frames", o->c.layer.frames, "latent frames")->check(CLI::PositiveNumber);
  cmd->add_option("--height", o->c.layer.height, "latent rows")->check(CLI::PositiveNumber);
  cmd->add_option("--width", o->c.layer.width, "latent columns")->check(CLI::PositiveNumber);
  cmd->add_option("--heads", o->c.layer.heads, "attention heads")->check(CLI::PositiveNumber);
  cmd->add_option("--dim", o->c.layer.dim, "head dimension")->check(CLI::PositiveNumber);
  cmd->add_option("--dtype", o->dtype, "element type")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--seed", o->c.layer.seed, "the input's seed (content, and the jitter draws)");
  cmd->add_option("--jitter", o->c.jitter, "per-head targets times exp(jitter * U[-1, 1]) drawn from the seed (0: seed-independent targets)");
  cmd->callback([o, &exit_code] {
    exit_code = guarded([o] {
      SyntheticCaptureConfig c = o->c;
      c.layer.dtype = o->dtype == "f16" ? DType::f16 : o->dtype == "f32" ? DType::f32 : DType::bf16;
      save_safetensors(o->output, make_synthetic_capture(c));
      std::printf("wrote %s: %d steps x %d layers, q/k [%d, %d, %d] %s\n", o->output.c_str(), c.steps, c.layers,
                  c.layer.heads, c.layer.frames * c.layer.height * c.layer.width, c.layer.dim, dtype_name(c.layer.dtype));
      return kExitOk;
    });
  });
}

}  // namespace svoo::cli
