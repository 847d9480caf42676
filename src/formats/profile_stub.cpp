// TEMPORARY stand-in for Profile's member functions so that the control tests link while the real
// implementation is written elsewhere. Drop this file at merge. No CSV functions here.
#include <cmath>
#include <limits>
#include <string>

#include "svoo/error.hpp"
#include "svoo/profile.hpp"

namespace svoo {

Profile::Profile(int steps, int layers, int heads) : steps_(steps), layers_(layers), heads_(heads) {
  require(steps >= 0 && layers >= 0 && heads >= 0, ErrorKind::invalid_argument, "negative profile extent");
  const std::size_t n = static_cast<std::size_t>(steps) * layers * heads;
  density_.assign(n, std::numeric_limits<double>::quiet_NaN());
  stats_.assign(n, EntryStats{});
}

std::size_t Profile::index(int step, int layer, int head) const noexcept {
  return (static_cast<std::size_t>(step - 1) * layers_ + layer) * heads_ + head;
}

std::int64_t Profile::size() const noexcept {
  std::int64_t n = 0;
  for (double d : density_) n += std::isnan(d) ? 0 : 1;
  return n;
}

bool Profile::has_stats() const noexcept {
  for (const auto& s : stats_) if (s.count > 0) return true;
  return false;
}

void Profile::set(int step, int layer, int head, double density, const EntryStats& stats) {
  require(step >= 1 && step <= steps_ && layer >= 0 && layer < layers_ && head >= 0 && head < heads_,
          ErrorKind::invalid_argument, "profile index out of range");
  require(density >= 0.0 && density <= 1.0, ErrorKind::invalid_argument, "profile density out of [0, 1]");
  density_[index(step, layer, head)] = density;
  stats_[index(step, layer, head)] = stats;
}

std::optional<double> Profile::density(int step, int layer, int head) const noexcept {
  if (step < 1 || step > steps_ || layer < 0 || layer >= layers_ || head < 0 || head >= heads_) return std::nullopt;
  const double d = density_[index(step, layer, head)];
  if (std::isnan(d)) return std::nullopt;
  return d;
}

std::optional<EntryStats> Profile::stats(int step, int layer, int head) const noexcept {
  if (!density(step, layer, head)) return std::nullopt;
  return stats_[index(step, layer, head)];
}

double Profile::mean_density() const noexcept {
  double sum = 0;
  std::int64_t n = 0;
  for (double d : density_) if (!std::isnan(d)) { sum += d; ++n; }
  return n ? sum / n : 0.0;
}

}  // namespace svoo
