// Benchmark helper: the card's power draw and SM clock while something runs, read through NVML
// (the driver's libnvidia-ml, opened at run time; without it the sampler reports nothing). On the
// lent H200 the attention kernels run at the card's 700 W limit, where the clock, not the issue
// rate, sets their speed (runs 144-150): a benchmark row then says how close to the limit it ran.
// Under the cap NVML's clock reads ~10 % above what the SMs count (1.76-1.97 GHz against
// 1.60-1.69 by clock64 in the kernel, run152): a trend, not the clock itself.
#pragma once

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace svoo::bench {

class PowerSampler {
 public:
  PowerSampler() {
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!lib_) return;
    auto init = reinterpret_cast<int (*)()>(dlsym(lib_, "nvmlInit_v2"));
    auto handle = reinterpret_cast<int (*)(unsigned, void**)>(dlsym(lib_, "nvmlDeviceGetHandleByIndex_v2"));
    power_ = reinterpret_cast<int (*)(void*, unsigned*)>(dlsym(lib_, "nvmlDeviceGetPowerUsage"));
    clock_ = reinterpret_cast<int (*)(void*, int, unsigned*)>(dlsym(lib_, "nvmlDeviceGetClockInfo"));
    int dev = 0;
    cudaGetDevice(&dev);  // NVML and CUDA number the devices alike unless CUDA_VISIBLE_DEVICES reorders them
    if (!init || !handle || !power_ || !clock_ || init() != 0 || handle(static_cast<unsigned>(dev), &dev_) != 0) dev_ = nullptr;
  }
  ~PowerSampler() { stop(); }
  bool ok() const { return dev_ != nullptr; }

  // Samples every 10 ms from now until stop().
  void start() {
    stop();
    watts_.clear(), mhz_.clear();
    if (!ok()) return;
    running_ = true;
    thread_ = std::thread([this] {
      while (running_.load()) {
        unsigned mw = 0, mhz = 0;
        if (power_(dev_, &mw) == 0 && clock_(dev_, 1 /*NVML_CLOCK_SM*/, &mhz) == 0) watts_.push_back(mw / 1000.0), mhz_.push_back(mhz);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  void stop() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
  }
  // Means over the second half of the samples (the power reading lags the load); 0 without samples.
  double mean_watts() const { return tail_mean(watts_); }
  double mean_mhz() const { return tail_mean(mhz_); }

 private:
  static double tail_mean(const std::vector<double>& x) {
    if (x.size() < 2) return 0.0;
    double s = 0;
    for (std::size_t i = x.size() / 2; i < x.size(); ++i) s += x[i];
    return s / static_cast<double>(x.size() - x.size() / 2);
  }
  void* lib_ = nullptr;
  void* dev_ = nullptr;
  int (*power_)(void*, unsigned*) = nullptr;
  int (*clock_)(void*, int, unsigned*) = nullptr;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::vector<double> watts_, mhz_;
};

}  // namespace svoo::bench
