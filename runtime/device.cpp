#include "runtime/device.h"

#include <cstdio>
#include <stdexcept>

#include "cpu/cpu_backend.h"
#if TETHER_HAVE_CUDA
#include "gpu/cuda_backend.h"
#endif

namespace tether {

namespace {
// Number of usable CUDA devices; `why` says why there are none.
int cuda_devices(std::string* why) {
#if TETHER_HAVE_CUDA
  return cuda_device_count(why);
#else
  if (why != nullptr) *why = "tether was built without the CUDA backend (gpu=disabled or no nvcc)";
  return 0;
#endif
}
}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& device,
                                      const BackendOptions& opts) {
  if (device == "cpu") return make_cpu_backend(opts);
  if (device == "auto") {
    std::string why;
    if (cuda_devices(&why) > 0) return make_backend("cuda:0", opts);
    std::fprintf(stderr, "tether: device auto: no CUDA device (%s); training on the CPU\n", why.c_str());
    return make_cpu_backend(opts);
  }
  if (device.rfind("cuda:", 0) == 0) {
    int index = -1;
    try {
      size_t used = 0;
      index = std::stoi(device.substr(5), &used);
      if (used != device.size() - 5) index = -1;
    } catch (const std::exception&) {
      index = -1;
    }
    if (index < 0) throw std::runtime_error("device: expected \"cuda:N\" with N >= 0, got \"" + device + "\"");
    std::string why;
    int count = cuda_devices(&why);
    if (index >= count) {
      throw std::runtime_error("device " + device + ": not available (" +
                               (count == 0 ? why : std::to_string(count) + " CUDA device(s) present") + ")");
    }
#if TETHER_HAVE_CUDA
    return make_cuda_backend(index, opts);
#endif
  }
  throw std::runtime_error("device: expected \"auto\", \"cpu\" or \"cuda:N\", got \"" + device + "\"");
}

std::vector<std::string> available_devices(std::string* skipped) {
  std::vector<std::string> out{"cpu"};
  std::string why;
  if (cuda_devices(&why) > 0) {
    out.push_back("cuda:0");
  } else if (skipped != nullptr) {
    *skipped = why;
  }
  return out;
}

}  // namespace tether
