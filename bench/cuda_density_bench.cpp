// Benchmark (not a test) of the device tau-density (svoo::cuda::tau_density): every row of every
// head of a full layer (no sampling), bf16, head dim 128, at the Wan2.1 720p shapes. Reports ms per
// layer (median of CUDA-event timings after a warm-up) and the mean density and bound. Time cuDNN
// dense attention in the same run for the ratio (.carry/dense_baseline.py --shape 12x75600).
// --rows R (repeatable) also times the profiler's stated sample of R rows a head (svoo::sample_rows,
// seed 0, as `svoo profile --rows R`) and reports how far its per-head densities lie from every row's.
//   svoo_cuda_density_bench [--json out.json] [--tau T] [--heads H]... [--data normal|synthetic]... [--rows R]...
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "../tests/gpu/device_buffer.hpp"
#include "power_sampler.hpp"
#include "timing.hpp"
#include "svoo/cuda.hpp"
#include "svoo/measures.hpp"
#include "svoo/synthetic.hpp"

int main(int argc, char** argv) {
  using namespace svoo;
  std::string json_path;
  double tau = 0.9;
  std::vector<int> heads_list;
  std::vector<std::string> data_list;
  std::vector<std::int64_t> samples;
  bool breakdown = false;
  CLI::App app{"Benchmark of the GPU tau-density over every row of a 720p layer (see the file's header)",
               "svoo_cuda_density_bench"};
  app.add_option("--json", json_path, "write the results here");
  app.add_option("--tau", tau, "mass threshold")->check(CLI::Range(1e-6, 1.0));
  app.add_option("--heads", heads_list, "heads of the layer (repeatable; default 12)")->check(CLI::Range(1, 4096));
  app.add_option("--data", data_list, "synthetic or normal (repeatable; default both)")
      ->check(CLI::IsMember({"synthetic", "normal"}));
  app.add_option("--rows", samples, "also time a stated sample of R rows a head (repeatable)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{75600}));
  app.add_flag("--breakdown", breakdown, "also time the runs stopped after pass 1 and after pass 2");
  CLI11_PARSE(app, argc, argv);
  if (heads_list.empty()) heads_list = {12};
  if (data_list.empty()) data_list = {"synthetic", "normal"};
  if (!cuda::available()) return 77;
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  // Which passes run: the Hopper search on compute capability 9.0 unless SVOO_DENSITY_PATH=mma.
  const char* env_path = std::getenv("SVOO_DENSITY_PATH");
  const char* path =
      prop.major == 9 && prop.minor == 0 && !(env_path && std::string(env_path) == "mma") ? "wgmma" : "mma";
  // The Hopper search: interpolated windows with later rounds (the default), or the three passes on
  // every row (SVOO_DENSITY_SEARCH=three). With --breakdown, pass1_ms / pass12_ms in the JSON are its
  // first stage and first two stages (pass 1, then pass 3 or pass 2).
  const char* env_search = std::getenv("SVOO_DENSITY_SEARCH");
  const char* search_name = std::string(path) == "mma" ? "mma"
                            : env_search && std::string(env_search) == "three" ? "three" : "interp";
  std::printf("# %s, tau %.2f, every row (no sampling), %s passes, %s search\n", prop.name, tau, path, search_name);
  bench::PowerSampler power;  // the SM clock and power of the every-row timing (NVML, where there)
  std::string json;
  for (int H : heads_list)
    for (const std::string& data : data_list) {
      const std::int64_t N = 21 * 45 * 80, D = 128;  // Wan2.1 720p: 75,600 tokens
      HostTensor hq, hk;
      if (data == "synthetic") {
        SyntheticConfig sc;
        sc.heads = H, sc.frames = 21, sc.height = 45, sc.width = 80, sc.calibration_rows = 64, sc.tau = tau;
        SyntheticLayer l = make_synthetic_layer(sc);
        hq = std::move(l.q), hk = std::move(l.k);
      } else {
        hq = HostTensor(DType::bf16, {H, N, D}), hk = HostTensor(DType::bf16, {H, N, D});
        std::mt19937 rng(5);
        std::normal_distribution<float> dist(0.f, 1.f);
        for (std::int64_t i = 0; i < hq.numel(); ++i) hq.set(i, dist(rng)), hk.set(i, 1.5f * dist(rng));
      }
      test::DeviceTensor q(hq), k(hk);
      const std::size_t ws = cuda::tau_density_workspace_bytes(H, N);
      void* work = nullptr;
      double* out = nullptr;
      test::cuda_ok(cudaMalloc(&work, ws), "cudaMalloc");
      test::cuda_ok(cudaMalloc(&out, 2 * H * sizeof(double) + 4 * H), "cudaMalloc");
      cuda::DensityOutputs o;
      o.density = out, o.bound = out + H, o.fallbacks = reinterpret_cast<std::int32_t*>(out + 2 * H);
      power.start();
      const double ms = bench::median_ms(
          [&] { cuda::tau_density(q.view(), k.view(), tau, nullptr, N, work, ws, o); }, 5);
      power.stop();
      double ms1 = 0, ms2 = 0;
      if (breakdown) {
        // SVOO_DENSITY_PASSES=n stops after stage n. The Hopper search's stages: pass 1, pass 3 on
        // the interpolated windows, the second round (passes 2 and 3 on the rows it missed, with
        // the list's construction); with SVOO_DENSITY_SEARCH=three pass 1, 2 and 3. density.cu's
        // mma.sync passes are two: there "2" is the whole.
        auto run = [&] { cuda::tau_density(q.view(), k.view(), tau, nullptr, N, work, ws, o); };
        setenv("SVOO_DENSITY_PASSES", "1", 1);
        ms1 = bench::median_ms(run, 3);
        setenv("SVOO_DENSITY_PASSES", "2", 1);
        ms2 = bench::median_ms(run, 3);
        unsetenv("SVOO_DENSITY_PASSES");
        const char* search = std::getenv("SVOO_DENSITY_SEARCH");
        const bool three = search && std::string(search) == "three";
        std::printf("   breakdown: pass 1 %.2f ms, %s %.2f ms, %s %.2f ms (0 on the mma.sync path)\n", ms1,
                    three ? "pass 2" : "pass 3", ms2 - ms1, three ? "pass 3" : "second round", ms - ms2);
        run();  // valid results again
      }
      std::vector<double> dens(2 * H);
      std::vector<std::int32_t> fb(H);
      test::cuda_ok(cudaMemcpy(dens.data(), out, 2 * H * sizeof(double), cudaMemcpyDeviceToHost), "download");
      test::cuda_ok(cudaMemcpy(fb.data(), out + 2 * H, 4 * H, cudaMemcpyDeviceToHost), "download");
      double md = 0, mb = 0, fbs = 0;
      for (int h = 0; h < H; ++h) md += dens[h] / H, mb = std::max(mb, dens[H + h]), fbs += fb[h];
      const double tflop = 2.0 * H * double(N) * N * D * 2 / 1e12;  // two QK^T passes
      std::printf("%2d heads x %lld tokens, %-9s: %8.2f ms per layer (%.0f TFLOP/s over 2 QK^T passes), mean density "
                  "%.4f, max bound %.2e, fallback rows %.0f; %.0f MHz, %.0f W\n",
                  H, (long long)N, data.c_str(), ms, tflop / ms * 1e3, md, mb, fbs, power.mean_mhz(), power.mean_watts());
      char buf[512];
      std::snprintf(buf, sizeof buf,
                    " {\"heads\": %d, \"tokens\": %lld, \"dim\": 128, \"dtype\": \"bf16\", \"data\": \"%s\", \"tau\": %.3f, "
                    "\"device\": \"%s\", \"density_ms\": %.3f, \"mean_density\": %.6f, \"max_bound\": %.3e, "
                    "\"fallback_rows\": %.0f, \"pass1_ms\": %.3f, \"pass12_ms\": %.3f, \"path\": \"%s\", \"search\": \"%s\"}",
                    H, (long long)N, data.c_str(), tau, prop.name, ms, md, mb, fbs, ms1, ms2, path, search_name);
      json += std::string(json.empty() ? "" : ",\n") + buf;
      // Stated row samples against every row: the largest difference of a head's density, absolute
      // and relative to that head's every-row density.
      for (const std::int64_t R : samples) {
        const std::vector<std::int64_t> rows = sample_rows(N, {R, 0});
        const std::int64_t nr = static_cast<std::int64_t>(rows.size());
        std::int64_t* drows = nullptr;
        test::cuda_ok(cudaMalloc(&drows, nr * sizeof(std::int64_t)), "cudaMalloc");
        test::cuda_ok(cudaMemcpy(drows, rows.data(), nr * sizeof(std::int64_t), cudaMemcpyHostToDevice), "upload");
        const double sms = bench::median_ms([&] { cuda::tau_density(q.view(), k.view(), tau, drows, nr, work, ws, o); }, 5);
        std::vector<double> sd(H);
        test::cuda_ok(cudaMemcpy(sd.data(), out, H * sizeof(double), cudaMemcpyDeviceToHost), "download");
        double max_abs = 0, max_rel = 0;
        for (int h = 0; h < H; ++h) {
          max_abs = std::max(max_abs, std::abs(sd[h] - dens[h]));
          if (dens[h] > 0) max_rel = std::max(max_rel, std::abs(sd[h] - dens[h]) / dens[h]);
        }
        std::printf("   sample of %lld rows a head: %8.2f ms per layer; per head |density - every row's| <= %.2e "
                    "(%.2f %% of the head's)\n",
                    (long long)nr, sms, max_abs, 100 * max_rel);
        std::snprintf(buf, sizeof buf,
                      " {\"heads\": %d, \"tokens\": %lld, \"data\": \"%s\", \"tau\": %.3f, \"device\": \"%s\", "
                      "\"sampled_rows\": %lld, \"density_ms\": %.3f, \"max_abs_diff\": %.3e, \"max_rel_diff\": %.3e}",
                      H, (long long)N, data.c_str(), tau, prop.name, (long long)nr, sms, max_abs, max_rel);
        json += std::string(",\n") + buf;
        cudaFree(drows);
      }
      cudaFree(work);
      cudaFree(out);
    }
  return svoo::bench::write_json_rows(json_path, json) ? 0 : 1;
}
