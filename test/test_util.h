// Helpers shared by the doctest suites: deterministic random inputs, error
// measures, buffers in a backend's memory, and running one case on every
// device under test with the CPU as the reference.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "models/backend.h"
#include "runtime/device.h"

namespace tether::testing {

// Uniform floats in [lo, hi) from a fixed seed.
inline std::vector<float> random_floats(size_t count, uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(count);
  for (float& x : v) x = u(rng);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

inline double norm2(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// ‖a − b‖₂ / ‖b‖₂ (the absolute error when b is zero).
inline double rel_error(const std::vector<float>& a, const std::vector<double>& b) {
  double d = 0.0, n = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += b[i] * b[i];
  }
  return n > 0.0 ? std::sqrt(d / n) : std::sqrt(d);
}

// Gradient check: norm-wise relative error below rtol, and every element
// within rtol·|want| + floor_frac·max|want|.
inline void check_grad(const std::vector<float>& got, const std::vector<double>& want,
                       const char* what, double rtol = 1e-4, double floor_frac = 1e-4) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  CHECK(rel_error(got, want) < rtol);
  const double floor = floor_frac * max_abs(want) + 1e-7;
  size_t bad = 0, first = got.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::fabs(double(got[i]) - want[i]) > rtol * std::fabs(want[i]) + floor) {
      if (bad++ == 0) first = i;
    }
  }
  if (bad > 0) {
    INFO("first mismatch at " << first << ": got " << got[first] << ", want " << want[first]);
    CHECK(bad == 0);
  }
}

// Central differences of loss() with respect to every element of v, perturbed
// in place (restored afterwards).
inline std::vector<double> numeric_grad(std::vector<double>& v,
                                        const std::function<double()>& loss,
                                        double step = 1e-4) {
  std::vector<double> g(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double keep = v[i];
    v[i] = keep + step;
    const double up = loss();
    v[i] = keep - step;
    const double down = loss();
    v[i] = keep;
    g[i] = (up - down) / (2.0 * step);
  }
  return g;
}

// Buffers in one backend's memory, freed when the arena goes.
class Arena {
 public:
  explicit Arena(Backend& be) : be_(be) {}
  template <typename T>
  T* put(const std::vector<T>& host) {
    T* p = zeros<T>(host.size());
    if (!host.empty()) be_.upload(p, host.data(), host.size() * sizeof(T));
    return p;
  }
  template <typename T>
  T* zeros(size_t count) {
    bufs_.emplace_back(&be_, std::max<size_t>(1, count * sizeof(T)));
    return reinterpret_cast<T*>(bufs_.back().get());
  }
  template <typename T>
  std::vector<T> get(const T* p, size_t count) {
    std::vector<T> h(count);
    if (count > 0) be_.download(h.data(), p, count * sizeof(T));
    return h;
  }

 private:
  Backend& be_;
  std::vector<DeviceBuffer<uint8_t>> bufs_;
};

using Outputs = std::vector<std::vector<float>>;

// Backends of the devices under test, opened once per process with 2 threads.
inline Backend& backend(const std::string& device) {
  static std::map<std::string, std::unique_ptr<Backend>> open;
  auto& be = open[device];
  if (!be) {
    BackendOptions opts;
    opts.threads = 2;
    be = make_backend(device, opts);
  }
  return *be;
}

// Devices under test; the first call reports once why CUDA is absent.
inline const std::vector<std::string>& devices() {
  static std::string why;
  static const std::vector<std::string> list = available_devices(&why);
  static bool told = false;
  if (!told) {
    told = true;
    if (list.size() == 1) MESSAGE("CUDA cases skipped: " << why);
  }
  return list;
}

// Runs `run` on the CPU and hands its outputs to `check_cpu` (the reference
// check); then on every other device, whose outputs must match the CPU's
// within a norm-wise relative error of `device_rtol`.
inline void on_devices(const std::function<Outputs(Backend&)>& run,
                       const std::function<void(const Outputs&)>& check_cpu,
                       double device_rtol = 1e-4) {
  const Outputs ref = run(backend("cpu"));
  check_cpu(ref);
  for (const std::string& dev : devices()) {
    if (dev == "cpu") continue;
    INFO("device " << dev << " against cpu");
    const Outputs got = run(backend(dev));
    REQUIRE(got.size() == ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      INFO("output " << i);
      REQUIRE(got[i].size() == ref[i].size());
      CHECK(rel_error(got[i], to_double(ref[i])) < device_rtol);
    }
  }
}

}  // namespace tether::testing
