// The compute backend interface: every numeric operation a model, an optimizer
// or the averaging algorithm performs on tensors. models/ and runtime/ only see
// this interface; cpu/ (the reference) and gpu/ (CUDA) implement it.
//
// Conventions
// - Tensors are float32, dense, NCHW for images and row-major [rows, cols] for
//   matrices. Pointers handed to a backend are in that backend's memory
//   (host for the CPU backend, device for CUDA); use upload/download to cross.
// - Operations are issued in order on the backend's compute stream and may run
//   asynchronously; anything returning a host value (dot, download) waits for
//   the work it depends on.
// - Gradient outputs are overwritten, never accumulated, unless a function
//   says otherwise. Nullable outputs are marked "may be null".
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "models/backend_options.h"

namespace tether {

// 2-D convolution geometry. Square stride and padding; kernel r x s.
struct ConvShape {
  int n = 0, c = 0, h = 0, w = 0;  // input  (N, C, H, W)
  int k = 0;                       // output channels
  int r = 0, s = 0;                // kernel height, width
  int stride = 1, pad = 0;
  int oh() const { return (h + 2 * pad - r) / stride + 1; }
  int ow() const { return (w + 2 * pad - s) / stride + 1; }
  size_t in_count() const { return size_t(n) * c * h * w; }
  size_t out_count() const { return size_t(n) * k * oh() * ow(); }
  size_t weight_count() const { return size_t(k) * c * r * s; }
};

enum class PoolKind { kMax, kAvg };

// 2-D pooling geometry (square window). Average pooling counts padding as
// zeros divided by the full window (PyTorch's count_include_pad=true).
struct PoolShape {
  int n = 0, c = 0, h = 0, w = 0;
  int kernel = 2, stride = 2, pad = 0;
  int oh() const { return (h + 2 * pad - kernel) / stride + 1; }
  int ow() const { return (w + 2 * pad - kernel) / stride + 1; }
  size_t in_count() const { return size_t(n) * c * h * w; }
  size_t out_count() const { return size_t(n) * c * oh() * ow(); }
};

// Batch-norm over (N, H, W) per channel. hw = H*W (1 for a [N, C] input).
struct BatchNormShape {
  int n = 0, c = 0, hw = 1;
  size_t count() const { return size_t(n) * c * hw; }
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;      // "cpu", "cuda:0"
  virtual bool is_device() const = 0;        // memory is not host memory

  // ---- memory -------------------------------------------------------------
  // Zero-initialised, aligned to at least 64 bytes. Never returns null:
  // throws std::bad_alloc (or a backend error) when it cannot allocate.
  virtual void* alloc_bytes(size_t bytes) = 0;
  virtual void free_bytes(void* p) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;   // wait for everything issued so far

  // ---- input --------------------------------------------------------------
  // dst[i] = (bytes[i] / 255 - mean) / std ; bytes are host memory.
  virtual void normalize_bytes(size_t count, const uint8_t* host_bytes,
                               float mean, float std, float* dst) = 0;

  // ---- dense layers -------------------------------------------------------
  // y(n,out) = x(n,in) · w(out,in)^T + b(out)          b may be null
  virtual void linear_forward(int n, int in, int out, const float* x,
                              const float* w, const float* b, float* y) = 0;
  // dx(n,in) = dy · w ; dw(out,in) = dy^T · x ; db(out) = Σ_n dy
  // dx and db may be null.
  virtual void linear_backward(int n, int in, int out, const float* x,
                               const float* w, const float* dy, float* dx,
                               float* dw, float* db) = 0;

  // y(n,k,oh,ow) = conv(x(n,c,h,w), w(k,c,r,s)) + b(k)  b may be null
  virtual void conv2d_forward(const ConvShape& sh, const float* x,
                              const float* w, const float* b, float* y) = 0;
  // dx may be null (first layer); db may be null.
  virtual void conv2d_backward(const ConvShape& sh, const float* x,
                               const float* w, const float* dy, float* dx,
                               float* dw, float* db) = 0;

  // ---- element-wise and pooling --------------------------------------------
  virtual void relu_forward(size_t count, const float* x, float* y) = 0;
  // dx = dy where y > 0 else 0 (y is the forward output).
  virtual void relu_backward(size_t count, const float* y, const float* dy,
                             float* dx) = 0;

  // argmax (max pooling only, may be null for avg): flat input index per
  // output element, used by pool_backward.
  virtual void pool_forward(PoolKind kind, const PoolShape& sh, const float* x,
                            float* y, int32_t* argmax) = 0;
  virtual void pool_backward(PoolKind kind, const PoolShape& sh,
                             const float* dy, const int32_t* argmax,
                             float* dx) = 0;

  // Training mode: normalise with batch statistics, save mean and 1/std for
  // backward, and update running statistics in place:
  //   running = (1 - momentum) * running + momentum * batch  (unbiased var).
  virtual void batchnorm_forward_train(const BatchNormShape& sh, const float* x,
                                       const float* gamma, const float* beta,
                                       float momentum, float eps,
                                       float* running_mean, float* running_var,
                                       float* save_mean, float* save_invstd,
                                       float* y) = 0;
  virtual void batchnorm_forward_eval(const BatchNormShape& sh, const float* x,
                                      const float* gamma, const float* beta,
                                      const float* running_mean,
                                      const float* running_var, float eps,
                                      float* y) = 0;
  virtual void batchnorm_backward(const BatchNormShape& sh, const float* x,
                                  const float* gamma, const float* dy,
                                  const float* save_mean,
                                  const float* save_invstd, float* dx,
                                  float* dgamma, float* dbeta) = 0;

  // Inverted dropout. mask[i] = keep ? 1/(1-p) : 0 from a counter-based hash
  // of (seed, i), so CPU and GPU draw the same mask. y = x * mask.
  virtual void dropout_forward(size_t count, float p, uint64_t seed,
                               const float* x, float* mask, float* y) = 0;

  // Softmax cross-entropy, mean over the batch.
  // dlogits (may be null) = (softmax - onehot) / n.
  // stats[0] += Σ per-sample loss ; stats[1] += number of correct argmaxes.
  // stats stays in backend memory so the stream never waits for the host.
  virtual void softmax_xent(int n, int classes, const float* logits,
                            const int32_t* labels, float* dlogits,
                            float* stats) = 0;
  // pred[i] = argmax_j logits(i, j)  (pred in backend memory)
  virtual void argmax_rows(int n, int classes, const float* logits,
                           int32_t* pred) = 0;

  // ---- vector algebra on the flat parameter arena ---------------------------
  virtual void fill(size_t count, float value, float* x) = 0;
  virtual void axpy(size_t count, float alpha, const float* x, float* y) = 0;  // y += αx
  virtual void scale(size_t count, float alpha, float* x) = 0;                 // x *= α
  virtual void add(size_t count, const float* a, const float* b, float* y) = 0;   // y = a + b
  virtual void sub(size_t count, const float* a, const float* b, float* y) = 0;   // y = a - b
  // Σ a_i b_i accumulated in double; waits for the result.
  virtual double dot(size_t count, const float* a, const float* b) = 0;
  // True when every element is finite; waits for the result.
  virtual bool all_finite(size_t count, const float* x) = 0;

  // SGD with momentum, Nesterov and L2 weight decay, PyTorch's formulation:
  //   g' = g + wd·w ; m = μ·m + g' ; step = nesterov ? g' + μ·m : m ; w -= lr·step
  virtual void sgd_step(size_t count, float lr, float momentum,
                        float weight_decay, bool nesterov, const float* g,
                        float* m, float* w) = 0;

  // CountSketch: out[b] = Σ_{i: h(i)=b} sign(i)·x[i], b < buckets, with the
  // hash h and sign of kernel_math.h seeded by `seed`. out is overwritten.
  virtual void count_sketch(size_t count, const float* x, uint64_t seed,
                            int buckets, float* out) = 0;
};

// RAII buffer in a backend's memory.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* be, size_t count) : be_(be), count_(count) {
    if (count_ > 0) ptr_ = static_cast<T*>(be_->alloc_bytes(count_ * sizeof(T)));
  }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_; ptr_ = o.ptr_; count_ = o.count_;
      o.ptr_ = nullptr; o.count_ = 0;
    }
    return *this;
  }
  void reset() {
    if (ptr_ != nullptr) be_->free_bytes(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }
  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  Backend* be_ = nullptr;
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace tether
