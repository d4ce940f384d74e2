// The CPU backend: the reference every GPU result is checked against, and the
// fast path on machines without a GPU.
#pragma once
#include <memory>

#include "models/backend.h"

namespace tether {
std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts);
}  // namespace tether
