// The Python extension `svoo._svoo`: the C++ library over DLPack tensors (numpy, torch, cupy...),
// with no copies: every array argument is viewed in place as a TensorView. svoo::Error becomes
// ValueError (bad arguments or files), OSError (I/O) or NotImplementedError (unsupported).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <string>
#include <vector>

#include "svoo/control.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"
#include "svoo/profile.hpp"
#include "svoo/profiler.hpp"
#include "svoo/stability.hpp"
#include "svoo/selection.hpp"
#ifdef SVOO_WITH_CUDA
#include "svoo/cuda.hpp"
#endif

namespace nb = nanobind;
using namespace svoo;

namespace {

using Array = nb::ndarray<nb::ro>;
using MutArray = nb::ndarray<>;

DType dtype_of(const nb::dlpack::dtype& t, const char* name) {
  const auto code = static_cast<nb::dlpack::dtype_code>(t.code);
  if (t.lanes == 1) {
    if (code == nb::dlpack::dtype_code::Float && t.bits == 32) return DType::f32;
    if (code == nb::dlpack::dtype_code::Float && t.bits == 16) return DType::f16;
    if (code == nb::dlpack::dtype_code::Bfloat && t.bits == 16) return DType::bf16;
    if (code == nb::dlpack::dtype_code::Int && t.bits == 32) return DType::i32;
    if (code == nb::dlpack::dtype_code::Int && t.bits == 64) return DType::i64;
  }
  fail(ErrorKind::dtype, std::string(name) + ": unsupported dtype (code " + std::to_string(t.code) + ", " +
                             std::to_string(t.bits) + " bits); use float32, float16 or bfloat16");
}

template <class A>
TensorView view_of(const A& a, const char* name) {
  require(a.ndim() >= 1 && a.ndim() <= static_cast<std::size_t>(kMaxRank), ErrorKind::shape,
          std::string(name) + ": rank must be 1 to 4, got " + std::to_string(a.ndim()));
  TensorView v;
  v.data = const_cast<void*>(static_cast<const void*>(a.data()));
  v.dtype = dtype_of(a.dtype(), name);
  const int dev = a.device_type();
  if (dev == nb::device::cpu::value) {
    v.device = Device::cpu;
  } else if (dev == nb::device::cuda::value) {
    v.device = Device::cuda;
  } else {
    fail(ErrorKind::device, std::string(name) + ": only CPU and CUDA tensors are supported");
  }
  v.rank = static_cast<int>(a.ndim());
  for (int d = 0; d < v.rank; ++d) {
    v.shape[d] = static_cast<std::int64_t>(a.shape(d));
    v.strides[d] = static_cast<std::int64_t>(a.stride(d));
  }
  return v;
}

SelectionConfig selection_config(double top_p, double floor_lo, double floor_hi, std::optional<double> cap,
                                 const std::string& rule) {
  require(rule == "released" || rule == "paper", ErrorKind::invalid_argument,
          "rule must be 'released' or 'paper', got '" + rule + "'");
  SelectionConfig s;
  s.rule = rule == "paper" ? SelectionRule::paper : SelectionRule::released;
  s.top_p = top_p, s.floor_lo = floor_lo, s.floor_hi = floor_hi, s.cap = cap;
  return s;
}

ClusterConfig cluster_config(int kq, int kk, int iterations, std::uint64_t seed, const std::string& method,
                             int align = 0, int align_candidates = 8) {
  require(method == "coclustering" || method == "kmeans", ErrorKind::invalid_argument,
          "method must be 'coclustering' or 'kmeans', got '" + method + "'");
  ClusterConfig c;
  c.kq = kq, c.kk = kk, c.iterations = iterations, c.seed = seed;
  c.query_align = align, c.align_candidates = align_candidates;
  c.method = method == "kmeans" ? ClusterMethod::kmeans : ClusterMethod::coclustering;
  return c;
}

// A host array owned by Python, copied from a vector.
template <class T>
nb::ndarray<nb::numpy, T> to_numpy(const std::vector<T>& v, std::vector<std::size_t> shape) {
  auto* copy = new std::vector<T>(v);
  nb::capsule owner(copy, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(copy->data(), shape.size(), shape.data(), owner);
}

#ifdef SVOO_WITH_CUDA
// A contiguous CUDA array of the given dtype and shape (labels, keep); returns its data pointer.
template <class A>
void* plan_array(const A& a, bool u8, std::vector<std::int64_t> shape, const char* name) {
  const bool dtype_ok = u8 ? (a.dtype() == nb::dtype<std::uint8_t>() || a.dtype() == nb::dtype<bool>())
                           : a.dtype() == nb::dtype<std::int32_t>();
  std::string want = "[";
  for (std::size_t d = 0; d < shape.size(); ++d) want += (d ? ", " : "") + std::to_string(shape[d]);
  want += "]";
  require(a.device_type() == nb::device::cuda::value, ErrorKind::device, std::string(name) + " must be a CUDA tensor");
  require(dtype_ok, ErrorKind::dtype, std::string(name) + (u8 ? " must be uint8" : " must be int32"));
  bool shape_ok = a.ndim() == shape.size();
  for (std::size_t d = 0; shape_ok && d < shape.size(); ++d) shape_ok = static_cast<std::int64_t>(a.shape(d)) == shape[d];
  require(shape_ok, ErrorKind::shape, std::string(name) + " must have shape " + want + " (the plan's)");
  std::int64_t expect = 1;
  for (std::size_t d = shape.size(); d-- > 0;) {
    require(shape[d] == 1 || static_cast<std::int64_t>(a.stride(d)) == expect, ErrorKind::stride,
            std::string(name) + " must be contiguous");
    expect *= shape[d];
  }
  return const_cast<void*>(static_cast<const void*>(a.data()));
}

// A clustering buffer: a CUDA tensor or a page-locked CPU tensor (the planner refuses pageable
// memory), contiguous 1-d, of at least `bytes` bytes.
template <class A>
void* clustering_buffer(const A& a, std::size_t bytes) {
  require(a.device_type() == nb::device::cuda::value || a.device_type() == nb::device::cpu::value ||
              a.device_type() == nb::device::cuda_host::value,
          ErrorKind::device, "buf must be a CUDA tensor or a page-locked CPU tensor");
  require(a.ndim() == 1 && a.stride(0) == 1, ErrorKind::shape, "buf must be a contiguous 1-d tensor");
  require(a.nbytes() >= bytes, ErrorKind::shape,
          "buf holds " + std::to_string(a.nbytes()) + " bytes; the clustering needs " + std::to_string(bytes));
  return const_cast<void*>(static_cast<const void*>(a.data()));
}
#endif

// The CPU plan (clustering, selection, layout) of one call.
struct CpuPlan {
  cpu::Plan plan;
};

}  // namespace

NB_MODULE(_svoo, m) {
  m.doc() = "svoo: sparse video-DiT attention (C++ core)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      switch (e.kind()) {
        case ErrorKind::io: PyErr_SetString(PyExc_OSError, e.what()); break;
        case ErrorKind::unsupported: PyErr_SetString(PyExc_NotImplementedError, e.what()); break;
        default: PyErr_SetString(PyExc_ValueError, e.what()); break;
      }
    }
  });
  m.attr("has_cuda") =
#ifdef SVOO_WITH_CUDA
      true;
#else
      false;
#endif

  m.def(
      "dense_attention",
      [](Array q, Array k, Array v, MutArray out, std::uintptr_t stream) {
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v"), ov = view_of(out, "out");
        if (qv.device == Device::cuda) {
#ifdef SVOO_WITH_CUDA
          cuda::dense_attention(qv, kv, vv, ov, nullptr, reinterpret_cast<cuda::Stream>(stream));
          return;
#else
          fail(ErrorKind::unsupported, "this svoo was built without CUDA");
#endif
        }
        nb::gil_scoped_release release;
        cpu::dense_attention(qv, kv, vv, ov);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("stream") = 0,
      "Dense attention of q [heads, tokens, dim] over k, v into out (any floating dtype on the CPU; bf16/f16, "
      "head_dim 128 on the GPU, launched on `stream`, a cudaStream_t as an integer, 0 = the default stream).");

  nb::class_<CpuPlan>(m, "CpuPlan", "A CPU plan: clustering, selection and block layout of one call.")
      .def_prop_ro("block_density",
                   [](const CpuPlan& p) { return block_density(p.plan.clustering, p.plan.selection); })
      .def_prop_ro("q_labels",
                   [](const CpuPlan& p) {
                     const auto& c = p.plan.clustering;
                     return to_numpy(c.q_labels, {static_cast<std::size_t>(c.heads), static_cast<std::size_t>(c.q_tokens)});
                   }, nb::rv_policy::automatic)
      .def_prop_ro("k_labels",
                   [](const CpuPlan& p) {
                     const auto& c = p.plan.clustering;
                     return to_numpy(c.k_labels, {static_cast<std::size_t>(c.heads), static_cast<std::size_t>(c.k_tokens)});
                   }, nb::rv_policy::automatic)
      .def_prop_ro("keep", [](const CpuPlan& p) {
        const auto& s = p.plan.selection;
        return to_numpy(s.keep, {static_cast<std::size_t>(s.heads), static_cast<std::size_t>(s.kq),
                                 static_cast<std::size_t>(s.kk)});
      }, nb::rv_policy::automatic);

  m.def(
      "cpu_plan",
      [](Array q, Array k, int kq, int kk, int iterations, std::uint64_t seed, const std::string& method, double top_p,
         double floor_lo, double floor_hi, std::optional<double> cap, const std::string& rule,
         std::vector<double> profiled, const CpuPlan* reuse, int align, int align_candidates) {
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k");
        const ClusterConfig cc = cluster_config(kq, kk, iterations, seed, method, align, align_candidates);
        const SelectionConfig sc = selection_config(top_p, floor_lo, floor_hi, cap, rule);
        nb::gil_scoped_release release;
        return CpuPlan{cpu::plan(qv, kv, cc, sc, profiled, reuse ? &reuse->plan.clustering : nullptr)};
      },
      nb::arg("q"), nb::arg("k"), nb::arg("kq"), nb::arg("kk"), nb::arg("iterations"), nb::arg("seed"),
      nb::arg("method"), nb::arg("top_p"), nb::arg("floor_lo"), nb::arg("floor_hi"), nb::arg("cap").none(),
      nb::arg("rule"), nb::arg("profiled"), nb::arg("reuse").none(), nb::arg("align") = 0,
      nb::arg("align_candidates") = 8);

  m.def(
      "cpu_sparse_attention",
      [](Array q, Array k, Array v, const CpuPlan& plan, MutArray out) {
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v"), ov = view_of(out, "out");
        nb::gil_scoped_release release;
        cpu::sparse_attention(qv, kv, vv, plan.plan.layout, ov);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("plan"), nb::arg("out"));

  m.def(
      "cpu_sparse_attention_labels",
      [](Array q, Array k, Array v,
         nb::ndarray<const std::int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> q_labels,
         nb::ndarray<const std::int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> k_labels,
         nb::ndarray<const std::uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu> keep, MutArray out) {
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v"), ov = view_of(out, "out");
        // A clustering that carries only what the layout needs (labels; sizes follow from them).
        Clustering c;
        c.heads = static_cast<std::int64_t>(q_labels.shape(0));
        c.q_tokens = static_cast<std::int64_t>(q_labels.shape(1));
        c.k_tokens = static_cast<std::int64_t>(k_labels.shape(1));
        c.dim = 1;
        c.kq = static_cast<int>(keep.shape(1));
        c.kk = static_cast<int>(keep.shape(2));
        require(static_cast<std::int64_t>(k_labels.shape(0)) == c.heads && static_cast<std::int64_t>(keep.shape(0)) == c.heads,
                ErrorKind::shape, "q_labels, k_labels and keep must have the same number of heads");
        c.q_labels.assign(q_labels.data(), q_labels.data() + q_labels.size());
        c.k_labels.assign(k_labels.data(), k_labels.data() + k_labels.size());
        c.q_sizes.assign(static_cast<std::size_t>(c.heads) * c.kq, 0);
        c.k_sizes.assign(static_cast<std::size_t>(c.heads) * c.kk, 0);
        for (std::int64_t h = 0; h < c.heads; ++h) {
          for (std::int64_t n = 0; n < c.q_tokens; ++n) {
            const std::int32_t l = c.q_labels[h * c.q_tokens + n];
            require(l >= 0 && l < c.kq, ErrorKind::invalid_argument, "q_labels holds a label outside [0, kq)");
            ++c.q_sizes[h * c.kq + l];
          }
          for (std::int64_t n = 0; n < c.k_tokens; ++n) {
            const std::int32_t l = c.k_labels[h * c.k_tokens + n];
            require(l >= 0 && l < c.kk, ErrorKind::invalid_argument, "k_labels holds a label outside [0, kk)");
            ++c.k_sizes[h * c.kk + l];
          }
        }
        c.q_centroids.assign(static_cast<std::size_t>(c.heads) * c.kq, 0.0f);
        c.k_centroids.assign(static_cast<std::size_t>(c.heads) * c.kk, 0.0f);
        Selection sel;
        sel.heads = c.heads, sel.kq = c.kq, sel.kk = c.kk;
        sel.keep.assign(keep.data(), keep.data() + keep.size());
        const BlockLayout layout = build_layout(c, sel);
        nb::gil_scoped_release release;
        cpu::sparse_attention(qv, kv, vv, layout, ov);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("q_labels"), nb::arg("k_labels"), nb::arg("keep"),
      nb::arg("out"), "Sparse attention from labels [heads, tokens] (int32) and keep [heads, kq, kk] (uint8).");

  m.def(
      "attention_recall",
      [](Array q, Array k, const CpuPlan& plan, std::int64_t rows, std::uint64_t seed) {
        return attention_recall(view_of(q, "q"), view_of(k, "k"), plan.plan.clustering, plan.plan.selection,
                                {rows, seed});
      },
      nb::arg("q"), nb::arg("k"), nb::arg("plan"), nb::arg("rows") = 256, nb::arg("seed") = 0);

  m.def(
      "tau_density",
      [](Array q, Array k, double tau, std::int64_t rows, std::uint64_t seed) {
        return tau_density(view_of(q, "q"), view_of(k, "k"), tau, {rows, seed});
      },
      nb::arg("q"), nb::arg("k"), nb::arg("tau") = 0.95, nb::arg("rows") = 0, nb::arg("seed") = 0);

  m.def(
      "save_profile",
      [](const std::string& path, const std::vector<std::tuple<int, int, int, std::vector<double>>>& entries,
         const std::string& aggregate) {
        require(aggregate == "max" || aggregate == "quantile", ErrorKind::invalid_argument,
                "aggregate must be 'max' or 'quantile', got '" + aggregate + "'");
        require(!entries.empty(), ErrorKind::invalid_argument, "save_profile: no entries");
        int steps = 0, layers = 0, heads = 0;
        for (const auto& [s, l, h, v] : entries) steps = std::max(steps, s), layers = std::max(layers, l + 1), heads = std::max(heads, h + 1);
        Profile p(steps, layers, heads);
        const Aggregate agg = aggregate == "max" ? Aggregate::max : Aggregate::quantile;
        for (const auto& [s, l, h, v] : entries) {
          const EntryStats st = entry_stats(v);
          p.set(s, l, h, aggregate_value(st, agg), st);
        }
        save_profile_csv_atomic(path, p);
      },
      nb::arg("path"), nb::arg("entries"), nb::arg("aggregate") = "max",
      "Writes a profile CSV (atomically) from (step, layer, head, [one density per input]) entries, with the "
      "per-entry statistics and the value aggregated as `svoo profile` does.");

  m.def("presets", [] {
    std::vector<nb::dict> out;
    for (const ModelPreset& p : model_presets()) {
      nb::dict d;
      d["name"] = p.name, d["description"] = p.description, d["layers"] = p.layers, d["heads"] = p.heads;
      d["steps"] = p.steps, d["warmup_steps"] = p.warmup_steps, d["dense_layers"] = p.dense_layers;
      d["top_p"] = p.top_p, d["floor_lo"] = p.floor_lo, d["floor_hi"] = p.floor_hi;
      d["reuse_interval"] = p.reuse_interval, d["kq"] = p.kq, d["kk"] = p.kk, d["iterations"] = p.iterations;
      d["experts"] = p.experts, d["reference_profile"] = p.reference_profile;
      out.push_back(d);
    }
    return out;
  });

  m.def(
      "load_profile",
      [](const std::string& path) {
        const Profile p = load_profile_csv(path);
        std::vector<double> d(static_cast<std::size_t>(p.steps()) * p.layers() * p.heads());
        for (int s = 0; s < p.steps(); ++s)
          for (int l = 0; l < p.layers(); ++l)
            for (int h = 0; h < p.heads(); ++h)
              d[(static_cast<std::size_t>(s) * p.layers() + l) * p.heads() + h] =
                  p.density(s + 1, l, h).value_or(std::numeric_limits<double>::quiet_NaN());
        return to_numpy(d, {static_cast<std::size_t>(p.steps()), static_cast<std::size_t>(p.layers()),
                            static_cast<std::size_t>(p.heads())});
      },
      nb::arg("path"), "Density [steps, layers, heads] of a profile CSV (NaN where absent; step index 0 = step 1).");

  nb::class_<Controller>(m, "Controller",
                         "Which calls run dense / recluster / reuse, and the per-head profile floors (spec 2.5).")
      .def("__init__",
           [](Controller* self, const std::string& preset, std::optional<int> steps, std::optional<std::string> profile,
              std::optional<int> warmup_steps, std::optional<int> dense_layers, std::optional<int> reuse_interval,
              double fallback_density, std::optional<int> layers, std::optional<int> heads) {
             ControlConfig c = ControlConfig::from_preset(find_preset(preset));
             if (layers) c.layers = *layers;
             if (heads) c.heads = *heads;
             if (steps) {
               c.steps = *steps;
               c.warmup_steps.reset();  // the preset's fraction applies to the new step count
             }
             if (warmup_steps) c.warmup_steps = *warmup_steps;
             if (dense_layers) c.dense_layers = *dense_layers;
             if (reuse_interval) c.reuse_interval = *reuse_interval;
             c.fallback_density = fallback_density;
             std::shared_ptr<const Profile> p;
             if (profile) p = std::make_shared<const Profile>(load_profile_csv(*profile));
             new (self) Controller(c, p);
           },
           nb::arg("preset"), nb::arg("steps").none() = nb::none(), nb::arg("profile").none() = nb::none(),
           nb::arg("warmup_steps").none() = nb::none(), nb::arg("dense_layers").none() = nb::none(),
           nb::arg("reuse_interval").none() = nb::none(), nb::arg("fallback_density") = 0.10,
           nb::arg("layers").none() = nb::none(), nb::arg("heads").none() = nb::none())
      .def_prop_ro("steps", [](const Controller& c) { return c.config().steps; })
      .def_prop_ro("layers", [](const Controller& c) { return c.config().layers; })
      .def_prop_ro("heads", [](const Controller& c) { return c.config().heads; })
      .def_prop_ro("warmup_steps", &Controller::warmup_steps)
      .def_prop_ro("dense_layers", &Controller::dense_layers)
      .def(
          "decide",
          [](const Controller& c, int step, int layer, int branch, int expert, std::optional<int> cached_at) {
            const Decision d = c.decide_with_cache(step, layer, branch, expert, cached_at);
            return nb::make_tuple(std::string(mode_name(d.mode)), d.head_density);
          },
          nb::arg("step"), nb::arg("layer"), nb::arg("branch") = 0, nb::arg("expert") = 0,
          nb::arg("cached_at").none() = nb::none(),
          "(mode, per-head densities); cached_at: the step of the caller's clustering for this slot, if any.");

#ifdef SVOO_WITH_CUDA
  m.def(
      "cuda_create_stream", [] { return reinterpret_cast<std::uintptr_t>(cuda::create_stream()); },
      "A new non-blocking CUDA stream on the current device (its handle), outside torch's stream pool, whose "
      "first use creates every pool stream (70 MiB of device memory on an H200). Never destroyed.");
  m.def(
      "cuda_tau_density",
      [](Array q, Array k, double tau, std::int64_t rows, std::uint64_t seed, std::uintptr_t stream) {
        require(q.device_type() == nb::device::cuda::value && k.device_type() == nb::device::cuda::value,
                ErrorKind::device, "cuda_tau_density: q and k must be CUDA tensors");
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k");
        nb::gil_scoped_release release;
        return cuda::tau_density(qv, kv, tau, {rows, seed}, reinterpret_cast<cuda::Stream>(stream)).density;
      },
      nb::arg("q"), nb::arg("k"), nb::arg("tau") = 0.95, nb::arg("rows") = 0, nb::arg("seed") = 0,
      nb::arg("stream") = 0,
      "tau-density per head on the GPU (include/svoo/cuda.hpp): q, k [heads, tokens, 128] bf16/f16 CUDA tensors; "
      "rows sampled as svoo.tau_density samples them (0: all). Waits for the result (a measurement, not the hot "
      "path).");
  nb::class_<cuda::Planner>(m, "CudaPlanner", "Device plan of one shape; see include/svoo/cuda.hpp.")
      .def(nb::init<const cuda::PlanShape&>())
      .def("__init__",
           [](cuda::Planner* self, std::int64_t heads, std::int64_t q_tokens, std::int64_t k_tokens, std::int64_t dim,
              int kq, int kk, int query_align) {
             new (self) cuda::Planner(cuda::PlanShape{heads, q_tokens, k_tokens, dim, kq, kk, query_align});
           },
           nb::arg("heads"), nb::arg("q_tokens"), nb::arg("k_tokens"), nb::arg("dim"), nb::arg("kq"), nb::arg("kk"),
           nb::arg("query_align") = 0)
      .def(
          "cluster",
          [](cuda::Planner& p, Array q, Array k, int iterations, std::uint64_t seed, const std::string& method,
             std::uintptr_t stream, int align, int align_candidates) {
            p.cluster(view_of(q, "q"), view_of(k, "k"),
                      cluster_config(p.shape().kq, p.shape().kk, iterations, seed, method, align, align_candidates),
                      reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("q"), nb::arg("k"), nb::arg("iterations") = 2, nb::arg("seed") = 0,
          nb::arg("method") = "coclustering", nb::arg("stream") = 0, nb::arg("align") = 0,
          nb::arg("align_candidates") = 8)
      .def(
          "select",
          [](cuda::Planner& p, double top_p, double floor_lo, double floor_hi, std::optional<double> cap,
             const std::string& rule, std::vector<double> profiled, std::uintptr_t stream) {
            p.select(selection_config(top_p, floor_lo, floor_hi, cap, rule), profiled,
                     reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("top_p"), nb::arg("floor_lo"), nb::arg("floor_hi"), nb::arg("cap").none(), nb::arg("rule"),
          nb::arg("profiled"), nb::arg("stream") = 0)
      .def(
          "sparse_attention",
          [](const cuda::Planner& p, Array q, Array k, Array v, MutArray out, std::uintptr_t stream) {
            cuda::sparse_attention(view_of(q, "q"), view_of(k, "k"), view_of(v, "v"), p, view_of(out, "out"), nullptr,
                                   reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("stream") = 0)
      .def_prop_ro("heads", [](const cuda::Planner& p) { return p.shape().heads; })
      .def_prop_ro("q_tokens", [](const cuda::Planner& p) { return p.shape().q_tokens; })
      .def_prop_ro("k_tokens", [](const cuda::Planner& p) { return p.shape().k_tokens; })
      .def_prop_ro("kq", [](const cuda::Planner& p) { return p.shape().kq; })
      .def_prop_ro("kk", [](const cuda::Planner& p) { return p.shape().kk; })
      .def_prop_ro("workspace_bytes", &cuda::Planner::workspace_bytes)
      .def_prop_ro("clustering_bytes", &cuda::Planner::clustering_bytes)
      .def(
          "select_device",
          [](cuda::Planner& p, double top_p, double floor_lo, double floor_hi, std::optional<double> cap,
             const std::string& rule, Array profiled, std::uintptr_t stream) {
            require(profiled.device_type() == nb::device::cuda::value, ErrorKind::device,
                    "profiled must be a CUDA tensor");
            require(profiled.dtype() == nb::dtype<double>(), ErrorKind::dtype, "profiled must be float64");
            require(profiled.ndim() == 1 && static_cast<std::int64_t>(profiled.shape(0)) == p.shape().heads &&
                        (profiled.shape(0) == 1 || profiled.stride(0) == 1),
                    ErrorKind::shape,
                    "profiled must be a contiguous [heads] = [" + std::to_string(p.shape().heads) + "] tensor");
            p.select(selection_config(top_p, floor_lo, floor_hi, cap, rule), static_cast<const double*>(profiled.data()),
                     reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("top_p"), nb::arg("floor_lo"), nb::arg("floor_hi"), nb::arg("cap").none(), nb::arg("rule"),
          nb::arg("profiled"), nb::arg("stream") = 0,
          "Selection with per-head densities already on the device (fp64 [heads]): no host copy, capturable.")
      .def(
          "save_clustering",
          [](const cuda::Planner& p, MutArray buf, std::uintptr_t stream) {
            p.save_clustering(clustering_buffer(buf, p.clustering_bytes()), reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("buf"), nb::arg("stream") = 0,
          "Copies the clustering (centroids, sizes, offsets, permutations) into a buffer of clustering_bytes: a "
          "CUDA tensor, or a page-locked CPU tensor (pin_memory=True), copied asynchronously on `stream`.")
      .def(
          "load_clustering",
          [](cuda::Planner& p, Array buf, std::uintptr_t stream) {
            p.load_clustering(clustering_buffer(buf, p.clustering_bytes()), reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("buf"), nb::arg("stream") = 0,
          "Restores a clustering saved by save_clustering (a CUDA or page-locked CPU buffer); run select next.")
      .def(
          "copy_plan",
          [](const cuda::Planner& p, MutArray q_labels, MutArray k_labels, MutArray keep, std::uintptr_t stream) {
            const cuda::PlanShape& sh = p.shape();
            p.copy_plan(static_cast<std::int32_t*>(plan_array(q_labels, false, {sh.heads, sh.q_tokens}, "q_labels")),
                        static_cast<std::int32_t*>(plan_array(k_labels, false, {sh.heads, sh.k_tokens}, "k_labels")),
                        static_cast<std::uint8_t*>(plan_array(keep, true, {sh.heads, sh.kq, sh.kk}, "keep")),
                        reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("q_labels"), nb::arg("k_labels"), nb::arg("keep"), nb::arg("stream") = 0,
          "Copies the plan's labels (int32 [heads, tokens]) and keep (uint8 [heads, kq, kk]) into CUDA tensors.")
      .def(
          "load_plan",
          [](cuda::Planner& p, Array q_labels, Array k_labels, Array keep, std::uintptr_t stream) {
            const cuda::PlanShape& sh = p.shape();
            p.load_plan(static_cast<const std::int32_t*>(plan_array(q_labels, false, {sh.heads, sh.q_tokens}, "q_labels")),
                        static_cast<const std::int32_t*>(plan_array(k_labels, false, {sh.heads, sh.k_tokens}, "k_labels")),
                        static_cast<const std::uint8_t*>(plan_array(keep, true, {sh.heads, sh.kq, sh.kk}, "keep")),
                        reinterpret_cast<cuda::Stream>(stream));
          },
          nb::arg("q_labels"), nb::arg("k_labels"), nb::arg("keep"), nb::arg("stream") = 0,
          "The layout from CUDA labels and keep (labels outside [0, k) are clamped, not reported).");
#endif
}
