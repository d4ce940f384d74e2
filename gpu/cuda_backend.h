// The CUDA backend (cuDNN, cuBLAS and our own kernels). Declared only when
// TETHER_HAVE_CUDA is set by the build.
//
// Streams: every Backend operation runs on one compute stream. upload/download
// go through pinned host staging on a separate copy stream, ordered against
// the compute stream with events (no device-wide synchronisation).
// synchronize() waits for both. A backend object is used by one thread at a
// time (the trainer); PinnedStager::ready()/wait() may be called from another.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "models/backend.h"

namespace tether {
// Usable CUDA devices; 0 with `why` filled when no driver or device is found.
// Devices are counted from 0 up to the first one tether cannot run on (compute
// capability below 8.0); `why` then names it. Never throws.
int cuda_device_count(std::string* why);
std::unique_ptr<Backend> make_cuda_backend(int index, const BackendOptions& opts);

// Asynchronous transfers of a float vector between a CUDA backend's memory and
// pinned host memory, for round deltas: the trainer starts a download, keeps
// issuing compute, and the I/O side polls ready() and reads host().
//
//   PinnedStager st(*backend, param_count);
//   st.begin_download(delta, param_count);   // snapshot now; copy in background
//   backend->fill(param_count, 0.f, delta);  // safe: the snapshot was taken
//   ...                                      // more compute, not blocked
//   if (st.ready()) send(st.host(), ...);    // or st.wait()
//
//   std::copy(avg, avg + n, st.host());
//   st.begin_upload(avg_dev, n);             // later compute sees avg_dev
//
// Costs: `capacity` floats of pinned host memory and, for downloads, the same
// again on the device (the snapshot that lets compute overwrite the source at
// once). Transfers run on the stager's own stream, in the order issued; ready()
// and wait() refer to the latest one. host() must not be written while an
// upload is in flight, nor read while a download is.
class PinnedStager {
 public:
  // `backend` must come from make_cuda_backend (std::invalid_argument otherwise)
  // and outlive the stager. capacity: the largest count, in floats.
  PinnedStager(Backend& backend, size_t capacity);
  ~PinnedStager();
  PinnedStager(const PinnedStager&) = delete;
  PinnedStager& operator=(const PinnedStager&) = delete;

  size_t capacity() const;
  float* host();               // pinned, capacity() floats
  const float* host() const;

  // host()[0, count) = dev[0, count) as of every compute operation issued
  // before this call (a device-side snapshot is taken on the compute stream;
  // the device-to-host copy runs on the stager's stream).
  void begin_download(const float* dev, size_t count);
  // dev[0, count) = host()[0, count) for every compute operation issued after
  // this call; compute issued before it that reads dev is not disturbed.
  void begin_upload(float* dev, size_t count);

  bool ready() const;  // the latest transfer has finished (never blocks)
  void wait();         // block until it has

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
}  // namespace tether
