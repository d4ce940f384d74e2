// The CUDA backend (cuDNN, cuBLAS and our own kernels). Declared only when
// TETHER_HAVE_CUDA is set by the build.
#pragma once
#include <memory>
#include <string>

#include "models/backend.h"

namespace tether {
// Usable CUDA devices; 0 with `why` filled when no driver or device is found.
int cuda_device_count(std::string* why);
std::unique_ptr<Backend> make_cuda_backend(int index, const BackendOptions& opts);
}  // namespace tether
