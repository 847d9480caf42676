// The Wan2.1 self-attention shapes the GPU benchmarks time (one layer: heads x latent frames x
// height x width tokens, head dim 128), and the options that pick them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace svoo::bench {

struct WanShape {
  const char* name;
  int heads, frames, height, width;
  std::int64_t tokens() const { return std::int64_t{frames} * height * width; }
};

inline const std::vector<WanShape>& wan_shapes() {
  static const std::vector<WanShape> shapes = {{"wan1.3b-480p", 12, 21, 30, 52},   // 32,760 tokens
                                               {"wan1.3b-720p", 12, 21, 45, 80},   // 75,600
                                               {"wan14b-720p", 40, 21, 45, 80}};  // 75,600
  return shapes;
}

// --json PATH and --shape NAME (repeatable; one of wan_shapes()).
inline void add_shape_options(CLI::App& app, std::string& json_path, std::vector<std::string>& only) {
  std::vector<std::string> names;
  for (const WanShape& s : wan_shapes()) names.emplace_back(s.name);
  app.add_option("--json", json_path, "write the results here");
  app.add_option("--shape", only, "only these shapes (repeatable)")->check(CLI::IsMember(names));
}

// Whether --shape picked this shape (no --shape: every shape).
inline bool picked(const std::vector<std::string>& only, const std::string& name) {
  return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
}

}  // namespace svoo::bench
