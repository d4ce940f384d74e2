// Opening a compute backend by name: "cpu", "cuda:N" or "auto".
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/backend.h"

namespace tether {

// "auto" opens cuda:0 when a device and driver are present, else the CPU and
// logs one line saying why. Throws std::runtime_error naming the device when a
// requested device cannot be opened.
std::unique_ptr<Backend> make_backend(const std::string& device,
                                      const BackendOptions& opts);

// Devices a test should cover: always "cpu"; "cuda:0" when the CUDA backend is
// compiled in and a device is present. `skipped` receives why CUDA is absent.
std::vector<std::string> available_devices(std::string* skipped);

}  // namespace tether
