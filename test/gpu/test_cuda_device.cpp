// Opening devices by name (runtime/device.h) with and without a CUDA device.
// On a machine without a GPU (or a build without the CUDA backend) the CUDA
// paths must fail with a sentence that says why, never crash; on a machine
// with one, the device must open. Each case says which branch it took.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "runtime/device.h"
#if TETHER_HAVE_CUDA
#include "gpu/cuda_backend.h"
#endif

using tether::BackendOptions;
using tether::make_backend;

namespace {
bool have_device(std::string* why) { return tether::available_devices(why).size() > 1; }
}  // namespace

TEST_CASE("available_devices always lists the CPU first") {
  std::string why;
  auto devices = tether::available_devices(&why);
  REQUIRE(!devices.empty());
  CHECK(devices.front() == "cpu");
  if (devices.size() == 1) {
    CHECK(!why.empty());
    MESSAGE("no CUDA device: " << why);
  } else {
    CHECK(devices[1] == "cuda:0");
  }
}

#if TETHER_HAVE_CUDA
TEST_CASE("cuda_device_count: a count, or 0 and a reason; never throws") {
  std::string why;
  int count = -1;
  CHECK_NOTHROW(count = tether::cuda_device_count(&why));
  CHECK(count >= 0);
  if (count == 0) {
    CHECK(!why.empty());
    MESSAGE("cuda_device_count = 0: " << why);
  } else {
    MESSAGE("cuda_device_count = " << count);
  }
  // A null `why` is allowed, and asking twice gives the same answer.
  CHECK(tether::cuda_device_count(nullptr) == count);
}

TEST_CASE("make_cuda_backend rejects an index past the devices present") {
  std::string why;
  int count = tether::cuda_device_count(&why);
  CHECK_THROWS_AS(tether::make_cuda_backend(count, BackendOptions{}), std::runtime_error);
  CHECK_THROWS_AS(tether::make_cuda_backend(-1, BackendOptions{}), std::runtime_error);
}
#else
TEST_CASE("built without the CUDA backend") {
  MESSAGE("TETHER_HAVE_CUDA=0: the CUDA backend is not compiled in (gpu=disabled or no nvcc)");
}
#endif

TEST_CASE("make_backend(\"cuda:0\") without a device throws a clear error") {
  std::string why;
  if (have_device(&why)) {
    MESSAGE("a CUDA device is present: the no-device error cannot be checked here");
    auto be = make_backend("cuda:0", BackendOptions{});
    CHECK(be->name() == "cuda:0");
    CHECK(be->is_device());
    return;
  }
  std::string what;
  try {
    (void)make_backend("cuda:0", BackendOptions{});
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  REQUIRE(!what.empty());
  CHECK(what.find("cuda:0") != std::string::npos);
  CHECK(what.find(why) != std::string::npos);  // says why, in the same words
  MESSAGE("make_backend(cuda:0): " << what);
}

TEST_CASE("make_backend(\"auto\") picks cuda:0 when present, else falls back to the CPU") {
  std::string why;
  bool device = have_device(&why);
  auto be = make_backend("auto", BackendOptions{});
  REQUIRE(be != nullptr);
  if (device) {
    CHECK(be->name() == "cuda:0");
    CHECK(be->is_device());
  } else {
    CHECK(be->name() == "cpu");
    CHECK(!be->is_device());
  }
}

TEST_CASE("make_backend rejects malformed device names") {
  for (const char* bad : {"cuda:", "cuda:x", "cuda:-1", "cuda:0x", "gpu", "CUDA:0", ""}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(make_backend(bad, BackendOptions{}), std::runtime_error);
  }
  // A well-formed index past the devices present.
  CHECK_THROWS_AS(make_backend("cuda:4096", BackendOptions{}), std::runtime_error);
}
