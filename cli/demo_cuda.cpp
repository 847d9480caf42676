// `svoo demo --device cuda`: the same layer planned and attended on the GPU (CUDA events time
// each step after one warm-up pass); outputs and plans come back to the host for the measures.
#include "demo_backend.hpp"
#include "svoo/error.hpp"

#ifdef SVOO_WITH_CUDA
#include <cuda_runtime.h>

#include "svoo/cuda.hpp"
#endif

namespace svoo::cli {

#ifndef SVOO_WITH_CUDA
DemoRun run_demo_cuda(const SyntheticLayer&, const ClusterConfig&, const SelectionConfig&, const std::vector<double>&,
                      Progress&) {
  fail(ErrorKind::unsupported, "this svoo was built without the CUDA backend (no nvcc at build time)");
}
#else
namespace {

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorKind::unsupported, std::string(what) + ": " + cudaGetErrorString(e));
}

// A device copy of a host tensor (or an uninitialised one of its shape), freed on scope exit.
struct DeviceCopy {
  void* ptr = nullptr;
  TensorView view;
  DeviceCopy(const HostTensor& h, bool copy) {
    ok(cudaMalloc(&ptr, h.nbytes()), "cudaMalloc");
    if (copy) ok(cudaMemcpy(ptr, h.bytes(), h.nbytes(), cudaMemcpyHostToDevice), "upload");
    view = h.view();
    view.data = ptr;
    view.device = Device::cuda;
  }
  ~DeviceCopy() { cudaFree(ptr); }
  void download(HostTensor& h) const { ok(cudaMemcpy(h.bytes(), ptr, h.nbytes(), cudaMemcpyDeviceToHost), "download"); }
};

template <class F>
double time_ms(F&& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a);
  f();
  cudaEventRecord(b);
  ok(cudaEventSynchronize(b), "timing");
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

}  // namespace

DemoRun run_demo_cuda(const SyntheticLayer& layer, const ClusterConfig& ccfg, const SelectionConfig& scfg,
                      const std::vector<double>& profiled, Progress& progress) {
  require(cuda::available(), ErrorKind::unsupported, "--device cuda: no CUDA device is visible");
  require(layer.q.dtype() == DType::bf16 || layer.q.dtype() == DType::f16, ErrorKind::dtype,
          "--device cuda needs --dtype bf16 or f16");
  const std::int64_t H = layer.q.shape()[0], N = layer.q.shape()[1], D = layer.q.shape()[2];
  DemoRun r;
  cudaDeviceProp prop;
  ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  r.device = prop.name;
  progress.stage("upload and warm-up on " + r.device);
  DeviceCopy q(layer.q, true), k(layer.k, true), v(layer.v, true);
  HostTensor out_shape(layer.q.dtype(), {H, N, D});
  DeviceCopy sparse(out_shape, false), dense(out_shape, false);
  cuda::Planner plan({H, N, N, D, ccfg.kq, ccfg.kk, ccfg.query_align});
  auto run_plan = [&] {
    plan.cluster(q.view, k.view, ccfg);
    plan.select(scfg, profiled);
  };
  run_plan();
  cuda::sparse_attention(q.view, k.view, v.view, plan, sparse.view);
  cuda::dense_attention(q.view, k.view, v.view, dense.view);
  ok(cudaDeviceSynchronize(), "warm-up");

  progress.stage("dense attention");
  r.dense_ms = time_ms([&] { cuda::dense_attention(q.view, k.view, v.view, dense.view); });
  progress.stage("co-clustering plan (Kq " + std::to_string(ccfg.kq) + ", Kk " + std::to_string(ccfg.kk) + ")");
  r.cluster_ms = time_ms([&] { plan.cluster(q.view, k.view, ccfg); });
  r.select_ms = time_ms([&] { plan.select(scfg, profiled); });
  progress.stage("sparse attention");
  r.sparse_ms = time_ms([&] { cuda::sparse_attention(q.view, k.view, v.view, plan, sparse.view); });
  r.co = plan.download_clustering();
  r.co_sel = plan.download_selection();
  r.sparse = HostTensor(layer.q.dtype(), {H, N, D});
  r.dense = HostTensor(layer.q.dtype(), {H, N, D});
  sparse.download(r.sparse);
  dense.download(r.dense);

  progress.stage("k-means baseline (same anchors)");
  ClusterConfig kcfg = ccfg;
  kcfg.method = ClusterMethod::kmeans;
  plan.cluster(q.view, k.view, kcfg);
  plan.select(scfg, profiled);
  r.km = plan.download_clustering();
  r.km_sel = plan.download_selection();
  r.km_scores = plan.download_scores();
  return r;
}
#endif

}  // namespace svoo::cli
