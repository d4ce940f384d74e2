// GPU benchmark: training-step throughput of a zoo model on cuda:0 against
// the CPU backend and (when --peer is given and works) PyTorch on the same
// GPU, measured in the same run; plus the pinned-staging bandwidth of a round
// delta. Correctness in the same run: the same initial parameters and batch
// give the same loss on both backends, and five SGD steps keep the
// parameters within a relative distance of 1e-3.
//
// usage: bench_cuda_train [--model lenet|mlp|resnet] [--batch 64] [--steps 200]
//          [--runs 3] [--warmup 20] [--cpu-steps 20] [--threads 0]
//          [--peer "python3 test/gpu/torch_cuda_train.py"]
// Prints one RESULT line. Without a CUDA device it says why and measures the
// CPU only (exit 0), so CI can run it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/backend.h"
#include "models/optimizer.h"
#include "models/zoo.h"
#include "runtime/device.h"
#if TETHER_HAVE_CUDA
#include "gpu/cuda_backend.h"
#endif

namespace {

using namespace tether;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string model = "lenet";
  int batch = 64, steps = 200, runs = 3, warmup = 20, cpu_steps = 20, threads = 0;
  std::string peer;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(k + ": missing value");
      return argv[++i];
    };
    if (k == "--model") a.model = val();
    else if (k == "--batch") a.batch = std::stoi(val());
    else if (k == "--steps") a.steps = std::stoi(val());
    else if (k == "--runs") a.runs = std::stoi(val());
    else if (k == "--warmup") a.warmup = std::stoi(val());
    else if (k == "--cpu-steps") a.cpu_steps = std::stoi(val());
    else if (k == "--threads") a.threads = std::stoi(val());
    else if (k == "--peer") a.peer = val();
    else throw std::invalid_argument("unknown argument " + k);
  }
  if (a.batch <= 0 || a.steps <= 0 || a.runs <= 0 || a.warmup < 0 || a.cpu_steps <= 0) {
    throw std::invalid_argument("batch, steps, runs and cpu-steps must be positive");
  }
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// One device's model, optimizer and resident batch.
struct Rig {
  std::unique_ptr<Backend> be;
  std::unique_ptr<Model> model;
  std::unique_ptr<Sgd> sgd;
  DeviceBuffer<float> x, stats;
  DeviceBuffer<int32_t> labels;

  Rig(const std::string& device, const Args& a) {
    BackendOptions o;
    o.threads = a.threads;
    be = make_backend(device, o);
    ModelSpec spec;
    spec.name = a.model;
    if (a.model == "resnet") spec.depth = 3;  // ResNet-20
    Shape in{1, 28, 28};
    model = make_model(spec, in, 10);
    model->build(be.get(), a.batch, 1);
    sgd = std::make_unique<Sgd>(be.get(), model->trainable_count(), SgdOptions{0.05f, 0.9f, 0.0f, false});
    std::vector<float> hx(size_t(a.batch) * in.count());
    for (size_t i = 0; i < hx.size(); ++i) hx[i] = std::sin(0.001f * float(i * 7919 % 100003));
    std::vector<int32_t> hl(size_t(a.batch));
    for (int i = 0; i < a.batch; ++i) hl[size_t(i)] = (i * 37 + 5) % 10;
    x = DeviceBuffer<float>(be.get(), hx.size());
    labels = DeviceBuffer<int32_t>(be.get(), hl.size());
    stats = DeviceBuffer<float>(be.get(), 2);
    be->upload(x.get(), hx.data(), x.bytes());
    be->upload(labels.get(), hl.data(), labels.bytes());
  }
  void step(int batch) {
    model->forward_backward(x.get(), labels.get(), batch, 0, stats.get());
    sgd->step(0.05f, model->grads(), model->params());
  }
  float loss_of_one_step(int batch) {
    be->fill(2, 0.0f, stats.get());
    model->forward_backward(x.get(), labels.get(), batch, 0, stats.get());
    float s[2];
    be->download(s, stats.get(), sizeof(s));
    return s[0] / float(batch);
  }
  // images/s over `runs` runs of `steps` steps (median).
  double throughput(int batch, int warmup, int steps, int runs) {
    for (int i = 0; i < warmup; ++i) step(batch);
    be->synchronize();
    std::vector<double> r;
    for (int k = 0; k < runs; ++k) {
      auto t0 = Clock::now();
      for (int i = 0; i < steps; ++i) step(batch);
      be->synchronize();
      double s = std::chrono::duration<double>(Clock::now() - t0).count();
      r.push_back(double(batch) * steps / s);
    }
    return median(r);
  }
};

// Runs the PyTorch peer; returns its median img/s or -1 with `why`.
double run_peer(const std::string& cmd, const Args& a, std::string* why) {
  std::string full = cmd + " --model " + (a.model == "lenet" ? "cnn" : a.model) + " --batch " +
                     std::to_string(a.batch) + " --steps " + std::to_string(a.steps) + " --runs " +
                     std::to_string(a.runs) + " --warmup " + std::to_string(a.warmup) + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (p == nullptr) {
    *why = "cannot start: " + full;
    return -1.0;
  }
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) {
    out += buf;
    std::fputs(("  peer: " + std::string(buf)).c_str(), stdout);
  }
  int rc = pclose(p);
  size_t at = out.rfind("median=");
  if (rc != 0 || at == std::string::npos) {
    *why = "peer exited with status " + std::to_string(rc) + " and no median";
    return -1.0;
  }
  return std::atof(out.c_str() + at + 7);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);
    std::string why;
    std::vector<std::string> devices = available_devices(&why);
    bool gpu = devices.size() > 1;
    std::printf("bench_cuda_train: model=%s batch=%d steps=%d runs=%d\n", a.model.c_str(), a.batch,
                a.steps, a.runs);
    if (!gpu) std::printf("no CUDA device (%s): measuring the CPU only\n", why.c_str());

    Rig cpu("cpu", a);
    double cpu_ips = cpu.throughput(a.batch, std::min(a.warmup, 3), a.cpu_steps, 1);
    std::printf("cpu:    %.1f img/s\n", cpu_ips);
    if (!gpu) {
      std::printf("RESULT model=%s batch=%d cpu=%.1f img/s cuda=none (%s)\n", a.model.c_str(),
                  a.batch, cpu_ips, why.c_str());
      return 0;
    }

    // Correctness in the same run: same init and batch on both backends.
    Rig ref("cpu", a), dev("cuda:0", a);
    float l_cpu = ref.loss_of_one_step(a.batch), l_gpu = dev.loss_of_one_step(a.batch);
    for (int i = 0; i < 5; ++i) {
      ref.step(a.batch);
      dev.step(a.batch);
    }
    std::vector<float> pc = ref.model->download_params(), pg = dev.model->download_params();
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < pc.size(); ++i) {
      num += (double(pc[i]) - pg[i]) * (double(pc[i]) - pg[i]);
      den += double(pc[i]) * pc[i];
    }
    double rel = std::sqrt(num / std::max(den, 1e-30));
    bool ok = std::abs(l_cpu - l_gpu) <= 1e-3f * (1.0f + std::abs(l_cpu)) && rel <= 1e-3;
    std::printf("check:  first loss cpu=%.6f cuda=%.6f; params after 5 steps rel. diff %.2e: %s\n",
                l_cpu, l_gpu, rel, ok ? "ok" : "MISMATCH");

    double gpu_ips = dev.throughput(a.batch, a.warmup, a.steps, a.runs);
    std::printf("cuda:0: %.1f img/s (%.1fx the CPU backend)\n", gpu_ips, gpu_ips / cpu_ips);

    double staging_gbs = 0.0;
#if TETHER_HAVE_CUDA
    {
      // A round delta of ResNet-18's size through the pinned stager.
      const size_t n = 11u << 20;
      DeviceBuffer<float> delta(dev.be.get(), n);
      PinnedStager st(*dev.be, n);
      st.begin_download(delta.get(), n);
      st.wait();
      std::vector<double> r;
      for (int k = 0; k < 5; ++k) {
        auto t0 = Clock::now();
        st.begin_download(delta.get(), n);
        st.wait();
        r.push_back(double(n) * sizeof(float) / 1e9 /
                    std::chrono::duration<double>(Clock::now() - t0).count());
      }
      staging_gbs = median(r);
      std::printf("staging: %.1f GB/s device->pinned host (44 MB delta, snapshot included)\n",
                  staging_gbs);
    }
#endif

    std::string peer = "none";
    if (!a.peer.empty()) {
      std::string pwhy;
      double peer_ips = run_peer(a.peer, a, &pwhy);
      if (peer_ips > 0) {
        std::printf("peer:   PyTorch %.1f img/s; tether/PyTorch = %.2f\n", peer_ips,
                    gpu_ips / peer_ips);
        char b[64];
        std::snprintf(b, sizeof(b), "%.1f", peer_ips);
        peer = b;
      } else {
        std::printf("peer:   skipped (%s)\n", pwhy.c_str());
      }
    }
    std::printf(
        "RESULT model=%s batch=%d cuda=%.1f img/s cpu=%.1f img/s torch_cuda=%s staging=%.1f GB/s "
        "check=%s\n",
        a.model.c_str(), a.batch, gpu_ips, cpu_ips, peer.c_str(), staging_gbs,
        ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_train: %s\n", e.what());
    return 2;
  }
}
