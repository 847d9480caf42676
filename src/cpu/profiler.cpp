// The offline profiler: capture naming, per-slot tau-densities of every input, and per-entry
// aggregation (see svoo/profiler.hpp).
#include "svoo/profiler.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <set>

#include "svoo/error.hpp"

#ifdef SVOO_WITH_CUDA
#include "svoo/cuda.hpp"
#endif

namespace svoo {
namespace {

// Parses a non-negative decimal without sign or leading zeros; false otherwise.
bool parse_index(std::string_view s, int& out) {
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && out >= 0;
}

// "q.s3.l7" -> ('q', {3, 7}); false for anything else.
bool parse_name(const std::string& name, char& qk, CaptureSlot& slot) {
  if (name.size() < 7 || (name[0] != 'q' && name[0] != 'k') || name.compare(1, 2, ".s") != 0) return false;
  const std::size_t dot = name.find(".l", 3);
  if (dot == std::string::npos) return false;
  qk = name[0];
  return parse_index(std::string_view(name).substr(3, dot - 3), slot.step) &&
         parse_index(std::string_view(name).substr(dot + 2), slot.layer) && slot.step >= 1;
}

// [heads, tokens, dim] view of a capture tensor (a leading batch of 1 is dropped).
TensorView head_view(const SafetensorsFile& f, const std::string& name, const std::string& source) {
  const HostTensor& t = f.at(name);
  std::vector<std::int64_t> shape = t.shape();
  if (shape.size() == 4 && shape[0] == 1) shape.erase(shape.begin());
  require(shape.size() == 3, ErrorKind::shape,
          source + ": tensor '" + name + "' must be [heads, tokens, head_dim], got rank " + std::to_string(t.shape().size()));
  require(is_floating(t.dtype()), ErrorKind::dtype,
          source + ": tensor '" + name + "' must be F32, F16 or BF16, got " + dtype_name(t.dtype()));
  return TensorView::contiguous(const_cast<std::byte*>(t.bytes()), t.dtype(), {shape[0], shape[1], shape[2]});
}

std::vector<double> slot_density(const TensorView& q, const TensorView& k, const ProfilerOptions& o) {
  if (o.device == Device::cpu) return tau_density(q, k, o.tau, o.rows);
#ifdef SVOO_WITH_CUDA
  require(cuda::available(), ErrorKind::unsupported, "profiler: --device cuda, but no CUDA device is visible");
  return cuda::tau_density(q, k, o.tau, o.rows).density;
#else
  fail(ErrorKind::unsupported, "profiler: --device cuda, but this svoo was built without the CUDA backend");
#endif
}

}  // namespace

std::string capture_tensor_name(char qk, const CaptureSlot& slot) {
  return std::string(1, qk) + ".s" + std::to_string(slot.step) + ".l" + std::to_string(slot.layer);
}

std::vector<CaptureSlot> capture_slots(const SafetensorsFile& capture, const std::string& source) {
  std::set<CaptureSlot> q, k;
  for (const auto& [name, _] : capture.tensors) {
    if (name.rfind("v.", 0) == 0) continue;  // values may travel along; the profiler does not need them
    char qk = 0;
    CaptureSlot slot;
    require(parse_name(name, qk, slot), ErrorKind::format,
            source + ": tensor name '" + name + "' is not q.s{step}.l{layer} or k.s{step}.l{layer} (step >= 1, layer >= 0)");
    (qk == 'q' ? q : k).insert(slot);
  }
  for (const auto& s : q)
    require(k.count(s), ErrorKind::format, source + ": '" + capture_tensor_name('q', s) + "' has no '" +
                                              capture_tensor_name('k', s) + "'");
  for (const auto& s : k)
    require(q.count(s), ErrorKind::format, source + ": '" + capture_tensor_name('k', s) + "' has no '" +
                                              capture_tensor_name('q', s) + "'");
  require(!q.empty(), ErrorKind::format, source + ": no q.s{step}.l{layer} tensors (see docs/capture-format.md)");
  return {q.begin(), q.end()};
}

Profile profile_captures(const std::vector<SafetensorsFile>& captures, const std::vector<std::string>& sources,
                         const ProfilerOptions& options, const Profile* resume, const ProfilerCallback& callback) {
  require(!captures.empty() && captures.size() == sources.size(), ErrorKind::invalid_argument,
          "the profiler needs at least one input, and one name per input");
  const int m = static_cast<int>(captures.size());
  if (options.device == Device::cuda) {  // fail before any work, not after the first slot
#ifdef SVOO_WITH_CUDA
    require(cuda::available(), ErrorKind::unsupported, "profiler: --device cuda, but no CUDA device is visible");
#else
    fail(ErrorKind::unsupported, "profiler: --device cuda, but this svoo was built without the CUDA backend");
#endif
  }
  const std::vector<CaptureSlot> slots = capture_slots(captures[0], sources[0]);
  for (int i = 1; i < m; ++i)
    require(capture_slots(captures[i], sources[i]) == slots, ErrorKind::invalid_argument,
            sources[i] + " captures other (step, layer) slots than " + sources[0] + ": every input must capture the same ones");
  int steps = 0, layers = 0;
  for (const auto& s : slots) {
    steps = std::max(steps, s.step);
    layers = std::max(layers, s.layer + 1);
  }
  const std::int64_t heads = head_view(captures[0], capture_tensor_name('q', slots[0]), sources[0]).shape[0];
  require(heads >= 1 && heads <= kMaxProfileHeads, ErrorKind::shape,
          sources[0] + ": " + std::to_string(heads) + " heads is outside 1.." + std::to_string(kMaxProfileHeads));
  Profile out(steps, layers, static_cast<int>(heads));

  const int total = static_cast<int>(slots.size());
  for (int pos = 0; pos < total; ++pos) {
    const CaptureSlot& slot = slots[pos];
    // Resume: keep the slot when every head is present with statistics over the same inputs.
    bool have = resume != nullptr;
    for (int h = 0; have && h < heads; ++h) {
      const auto st = resume->stats(slot.step, slot.layer, h);
      have = st && st->count == m;
    }
    if (have) {
      for (int h = 0; h < heads; ++h)
        out.set(slot.step, slot.layer, h, *resume->density(slot.step, slot.layer, h),
                *resume->stats(slot.step, slot.layer, h));
      if (callback) callback(out, slot, pos + 1, total, true);
      continue;
    }
    std::vector<std::vector<double>> per_input(m);
    for (int i = 0; i < m; ++i) {
      const std::string qn = capture_tensor_name('q', slot), kn = capture_tensor_name('k', slot);
      const TensorView q = head_view(captures[i], qn, sources[i]), k = head_view(captures[i], kn, sources[i]);
      require(q.shape[0] == heads && k.shape[0] == heads, ErrorKind::shape,
              sources[i] + ": '" + qn + "' / '" + kn + "' have " + std::to_string(q.shape[0]) + " / " +
                  std::to_string(k.shape[0]) + " heads, " + sources[0] + " has " + std::to_string(heads) +
                  ": every input and slot must have the same heads");
      require(q.shape[2] == k.shape[2], ErrorKind::shape,
              sources[i] + ": '" + qn + "' and '" + kn + "' have head_dim " + std::to_string(q.shape[2]) + " and " +
                  std::to_string(k.shape[2]));
      per_input[i] = slot_density(q, k, options);
    }
    std::vector<double> values(m);
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < m; ++i) values[i] = per_input[i][h];
      const EntryStats st = entry_stats(values);
      out.set(slot.step, slot.layer, h, aggregate_value(st, options.aggregate), st);
    }
    if (callback) callback(out, slot, pos + 1, total, false);
  }
  return out;
}

void save_profile_csv_atomic(const std::string& path, const Profile& profile) {
  const std::string tmp = path + ".tmp";
  save_profile_csv(tmp, profile);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail(ErrorKind::io, "cannot rename '" + tmp + "' to '" + path + "'");
}

}  // namespace svoo
