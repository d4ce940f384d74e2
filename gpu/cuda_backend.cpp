// The CUDA backend: cuDNN for convolutions, ReLU and batch norm, cuBLAS for
// linear layers, tether's kernels (gpu/kernels.cu) for the rest.
//
// Streams and ordering
//   compute_  every Backend operation, in issue order.
//   copy_     upload/download through four 4 MiB pinned staging slots used
//             round-robin (chunks of a large transfer pipelined). Before a
//             transfer the copy stream waits on an event recorded on compute_
//             (so it sees every write issued before it and does not overwrite
//             memory still being read); after an upload compute_ waits on an
//             event recorded on copy_. Nothing synchronises the whole device.
// Memory
//   Stream-ordered allocation (cudaMallocAsync on compute_) from the device's
//   default pool, with the release threshold raised so freed blocks are kept
//   for reuse, like PyTorch's caching allocator. Devices without memory pools
//   fall back to cudaMalloc/cudaFree.
// Precision
//   float32 everywhere. TF32 tensor cores only with BackendOptions::tf32:
//   cuBLAS math mode CUBLAS_TF32_TENSOR_OP_MATH vs CUBLAS_DEFAULT_MATH, and
//   cuDNN convolutions CUDNN_DEFAULT_MATH vs CUDNN_FMA_MATH (as PyTorch does:
//   for float data on Ampere and later, cuDNN's default math permits TF32).
// Convolution algorithms
//   Chosen once per ConvShape by cuDNN's own search (cudnnFind*, falling back
//   to the cudnnGet*_v7 heuristics when the search cannot run), cached with
//   their workspace sizes; one grow-only workspace serves every convolution.
#include "gpu/cuda_backend.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>

#include "gpu/cuda_check.h"
#include "gpu/kernels.h"

namespace tether {

namespace {

constexpr size_t kStageBytes = size_t(4) << 20;  // one pinned staging slot
constexpr int kStageSlots = 4;  // used round-robin: small uploads in a row do not wait
constexpr int kMinComputeMajor = 8;              // sm_80 SASS / compute_90 PTX
constexpr size_t kActivationChunk = size_t(1) << 30;  // cuDNN descriptor dims are int

const float kOne = 1.0f;
const float kZero = 0.0f;

std::string device_name(int index) { return "cuda:" + std::to_string(index); }

// Scratch buffers that grow on demand; one slot per use.
enum ScratchSlot : int {
  kWorkspace,  // cuDNN convolution workspace
  kBytes,      // normalize_bytes: staged input bytes
  kXent,       // softmax_xent: per-row loss and correctness
  kReduce,     // dot partials, all_finite flag
  kSketch,     // count_sketch accumulators
  kBnGrad,     // batchnorm_backward when dgamma/dbeta are null
  kLabelFlag,  // released with the scratch buffers: softmax_xent's bad-label flag
  kScratchSlots
};

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;  // owned by the tensor cache
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnMathType_t fwd_math = CUDNN_FMA_MATH;
  size_t fwd_ws = 0;
  bool have_bwd = false;
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnMathType_t bwd_data_math = CUDNN_FMA_MATH;
  size_t bwd_data_ws = 0;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  cudnnMathType_t bwd_filter_math = CUDNN_FMA_MATH;
  size_t bwd_filter_ws = 0;
};

// The first result cuDNN ranked that ran and respects the precision asked for.
template <typename Perf>
const Perf* pick_algo(const Perf* perf, int returned, bool tf32) {
  for (int i = 0; i < returned; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (!tf32 && (perf[i].mathType == CUDNN_TENSOR_OP_MATH ||
                  perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)) {
      continue;
    }
    return &perf[i];
  }
  // Nothing ran in exact fp32: the first result that ran at all (its math
  // type is then forced to CUDNN_FMA_MATH, and the call falls back to the
  // plain algorithm if cuDNN refuses that).
  for (int i = 0; i < returned; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS) return &perf[i];
  }
  return nullptr;
}

void check_conv(const ConvShape& sh) {
  TETHER_GPU_ARG(sh.n >= 0 && sh.c > 0 && sh.h > 0 && sh.w > 0 && sh.k > 0 && sh.r > 0 &&
                     sh.s > 0 && sh.stride > 0 && sh.pad >= 0,
                 "conv2d: bad shape n=" << sh.n << " c=" << sh.c << " h=" << sh.h << " w=" << sh.w
                                        << " k=" << sh.k << " r=" << sh.r << " s=" << sh.s
                                        << " stride=" << sh.stride << " pad=" << sh.pad);
  TETHER_GPU_ARG(sh.oh() > 0 && sh.ow() > 0,
                 "conv2d: kernel " << sh.r << "x" << sh.s << " larger than padded input "
                                   << sh.h + 2 * sh.pad << "x" << sh.w + 2 * sh.pad);
}

void check_pool(const PoolShape& sh) {
  TETHER_GPU_ARG(sh.n >= 0 && sh.c > 0 && sh.h > 0 && sh.w > 0 && sh.kernel > 0 &&
                     sh.stride > 0 && sh.pad >= 0,
                 "pool: bad shape n=" << sh.n << " c=" << sh.c << " h=" << sh.h << " w=" << sh.w
                                      << " kernel=" << sh.kernel << " stride=" << sh.stride
                                      << " pad=" << sh.pad);
  TETHER_GPU_ARG(2 * sh.pad <= sh.kernel,
                 "pool: pad " << sh.pad << " exceeds half the kernel " << sh.kernel);
  TETHER_GPU_ARG(sh.oh() > 0 && sh.ow() > 0,
                 "pool: kernel " << sh.kernel << " larger than padded input "
                                 << sh.h + 2 * sh.pad << "x" << sh.w + 2 * sh.pad);
  TETHER_GPU_ARG(sh.in_count() <= size_t(INT32_MAX),
                 "pool: input of " << sh.in_count() << " elements overflows int32 argmax");
}

void check_bn(const BatchNormShape& sh) {
  TETHER_GPU_ARG(sh.n >= 0 && sh.c > 0 && sh.hw > 0,
                 "batchnorm: bad shape n=" << sh.n << " c=" << sh.c << " hw=" << sh.hw);
}

}  // namespace

class CudaBackend final : public Backend {
 public:
  CudaBackend(int index, const BackendOptions& opts) : index_(index), tf32_(opts.tf32) {
    try {
      init();
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaBackend() override { release(); }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return device_name(index_); }
  bool is_device() const override { return true; }

  int index() const { return index_; }
  cudaStream_t compute_stream() const { return compute_; }
  // Makes this backend's device current on the calling thread.
  void use() const { TETHER_CUDA_CHECK(cudaSetDevice(index_)); }

  // ---- memory ---------------------------------------------------------------
  void* alloc_bytes(size_t bytes) override {
    use();
    void* p = device_alloc(std::max<size_t>(bytes, 1));
    TETHER_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, compute_));
    return p;
  }
  void free_bytes(void* p) override {
    if (p == nullptr) return;
    use();
    device_free(p);
  }

  void upload(void* dst, const void* host_src, size_t bytes) override {
    if (bytes == 0) return;
    use();
    copy_after_compute();
    auto* d = static_cast<char*>(dst);
    const auto* h = static_cast<const char*>(host_src);
    for (size_t off = 0; off < bytes; off += kStageBytes) {
      int slot = next_slot_;
      next_slot_ = (next_slot_ + 1) % kStageSlots;
      size_t len = std::min(kStageBytes, bytes - off);
      // The slot's previous DMA must be done before we refill it.
      TETHER_CUDA_CHECK(cudaEventSynchronize(stage_done_[slot]));
      std::memcpy(stage_[slot], h + off, len);
      TETHER_CUDA_CHECK(cudaMemcpyAsync(d + off, stage_[slot], len, cudaMemcpyHostToDevice, copy_));
      TETHER_CUDA_CHECK(cudaEventRecord(stage_done_[slot], copy_));
    }
    // Compute issued from now on sees the data; the host does not wait.
    TETHER_CUDA_CHECK(cudaEventRecord(copy_done_, copy_));
    TETHER_CUDA_CHECK(cudaStreamWaitEvent(compute_, copy_done_, 0));
  }

  void download(void* host_dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    use();
    copy_after_compute();
    const auto* d = static_cast<const char*>(src);
    auto* h = static_cast<char*>(host_dst);
    // Pipelined: the DMA of chunk i overlaps the host copy of chunk i-1. A
    // slot's earlier upload DMA precedes ours on the same stream.
    size_t chunks = (bytes + kStageBytes - 1) / kStageBytes;
    const int first = next_slot_;
    next_slot_ = int((size_t(first) + chunks) % kStageSlots);
    for (size_t i = 0; i <= chunks; ++i) {
      if (i < chunks) {
        int slot = int((size_t(first) + i) % kStageSlots);
        size_t off = i * kStageBytes;
        size_t len = std::min(kStageBytes, bytes - off);
        TETHER_CUDA_CHECK(
            cudaMemcpyAsync(stage_[slot], d + off, len, cudaMemcpyDeviceToHost, copy_));
        TETHER_CUDA_CHECK(cudaEventRecord(stage_done_[slot], copy_));
      }
      if (i > 0) {
        size_t j = i - 1;
        int slot = int((size_t(first) + j) % kStageSlots);
        size_t off = j * kStageBytes;
        size_t len = std::min(kStageBytes, bytes - off);
        TETHER_CUDA_CHECK(cudaEventSynchronize(stage_done_[slot]));
        std::memcpy(h + off, stage_[slot], len);
      }
    }
    check_labels();
  }

  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0 || dst == src) return;
    use();
    TETHER_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_));
  }

  void synchronize() override {
    use();
    TETHER_CUDA_CHECK(cudaStreamSynchronize(compute_));
    TETHER_CUDA_CHECK(cudaStreamSynchronize(copy_));
    check_labels();
  }

  // ---- input ------------------------------------------------------------------
  void normalize_bytes(size_t count, const uint8_t* host_bytes, float mean, float std,
                       float* dst) override {
    TETHER_GPU_ARG(std > 0.0f, "normalize_bytes: std " << std << " must be positive");
    if (count == 0) return;
    use();
    auto* staged = static_cast<uint8_t*>(scratch(kBytes, count));
    upload(staged, host_bytes, count);
    gpu::launch_normalize_bytes(compute_, count, staged, mean, 1.0f / std, dst);
  }

  // ---- dense layers -------------------------------------------------------------
  // Row-major A(r, c) is column-major A^T (c x r, leading dimension c), so
  // every product below is written for the transposes.
  void linear_forward(int n, int in, int out, const float* x, const float* w, const float* b,
                      float* y) override {
    TETHER_GPU_ARG(n >= 0 && in > 0 && out > 0,
                   "linear_forward: n=" << n << " in=" << in << " out=" << out);
    if (n == 0) return;
    use();
    // y^T(out x n) = W(out x in) · x^T(in x n); W = (w as col-major in x out)^T.
    TETHER_CUBLAS_CHECK(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &kOne, w, in,
                                    x, in, &kZero, y, out));
    if (b != nullptr) gpu::launch_add_row_bias(compute_, n, out, b, y);
  }

  void linear_backward(int n, int in, int out, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db) override {
    TETHER_GPU_ARG(n >= 0 && in > 0 && out > 0,
                   "linear_backward: n=" << n << " in=" << in << " out=" << out);
    use();
    if (n == 0) {
      // Empty batch: dw and db are sums over no rows.
      if (dw != nullptr) gpu::launch_fill(compute_, size_t(out) * size_t(in), 0.0f, dw);
      if (db != nullptr) gpu::launch_fill(compute_, size_t(out), 0.0f, db);
      return;
    }
    if (dx != nullptr) {
      // dx^T(in x n) = w^T(in x out) · dy^T(out x n)
      TETHER_CUBLAS_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &kOne, w, in,
                                      dy, out, &kZero, dx, in));
    }
    if (dw != nullptr) {
      // dw^T(in x out) = x^T(in x n) · dy(n x out)
      TETHER_CUBLAS_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &kOne, x, in,
                                      dy, out, &kZero, dw, in));
    }
    if (db != nullptr) gpu::launch_col_sum(compute_, n, out, dy, db);
  }

  void conv2d_forward(const ConvShape& sh, const float* x, const float* w, const float* b,
                      float* y) override {
    check_conv(sh);
    if (sh.out_count() == 0) return;
    use();
    ConvPlan& p = plan(sh);
    auto run = [&] {
      TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.fwd_math));
      void* ws = p.fwd_ws > 0 ? scratch(kWorkspace, p.fwd_ws) : nullptr;
      return cudnnConvolutionForward(cudnn_, &kOne, p.x, x, p.w, w, p.conv, p.fwd, ws, p.fwd_ws,
                                     &kZero, p.y, y);
    };
    cudnnStatus_t st = run();
    if (not_supported(st) && p.fwd != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM) {
      note_fallback("forward", sh);
      p.fwd = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
      TETHER_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(cudnn_, p.x, p.w, p.conv, p.y,
                                                                 p.fwd, &p.fwd_ws));
      st = run();
    }
    gpu::check_cudnn(st, "cudnnConvolutionForward", __FILE__, __LINE__);
    if (b != nullptr) TETHER_CUDNN_CHECK(cudnnAddTensor(cudnn_, &kOne, p.bias, b, &kOne, p.y, y));
  }

  void conv2d_backward(const ConvShape& sh, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db) override {
    check_conv(sh);
    use();
    if (sh.out_count() == 0) {
      // No output: every gradient is zero.
      if (dx != nullptr) gpu::launch_fill(compute_, sh.in_count(), 0.0f, dx);
      if (dw != nullptr) gpu::launch_fill(compute_, sh.weight_count(), 0.0f, dw);
      if (db != nullptr) gpu::launch_fill(compute_, size_t(sh.k), 0.0f, db);
      return;
    }
    ConvPlan& p = plan(sh);
    if (!p.have_bwd) find_backward(p);
    if (dx != nullptr) {
      auto run = [&] {
        TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_data_math));
        void* ws = p.bwd_data_ws > 0 ? scratch(kWorkspace, p.bwd_data_ws) : nullptr;
        return cudnnConvolutionBackwardData(cudnn_, &kOne, p.w, w, p.y, dy, p.conv, p.bwd_data,
                                            ws, p.bwd_data_ws, &kZero, p.x, dx);
      };
      cudnnStatus_t st = run();
      if (not_supported(st) && p.bwd_data != CUDNN_CONVOLUTION_BWD_DATA_ALGO_0) {
        note_fallback("backward-data", sh);
        p.bwd_data = CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
        TETHER_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
            cudnn_, p.w, p.y, p.conv, p.x, p.bwd_data, &p.bwd_data_ws));
        st = run();
      }
      gpu::check_cudnn(st, "cudnnConvolutionBackwardData", __FILE__, __LINE__);
    }
    if (dw != nullptr) {
      auto run = [&] {
        TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_filter_math));
        void* ws = p.bwd_filter_ws > 0 ? scratch(kWorkspace, p.bwd_filter_ws) : nullptr;
        return cudnnConvolutionBackwardFilter(cudnn_, &kOne, p.x, x, p.y, dy, p.conv,
                                              p.bwd_filter, ws, p.bwd_filter_ws, &kZero, p.w, dw);
      };
      cudnnStatus_t st = run();
      if (not_supported(st) && p.bwd_filter != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0) {
        note_fallback("backward-filter", sh);
        p.bwd_filter = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0;
        TETHER_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
            cudnn_, p.x, p.y, p.conv, p.w, p.bwd_filter, &p.bwd_filter_ws));
        st = run();
      }
      gpu::check_cudnn(st, "cudnnConvolutionBackwardFilter", __FILE__, __LINE__);
    }
    if (db != nullptr) {
      TETHER_CUDNN_CHECK(
          cudnnConvolutionBackwardBias(cudnn_, &kOne, p.y, dy, &kZero, p.bias, db));
    }
  }

  // ---- element-wise and pooling ---------------------------------------------------
  void relu_forward(size_t count, const float* x, float* y) override {
    use();
    for (size_t off = 0; off < count; off += kActivationChunk) {
      int len = int(std::min(kActivationChunk, count - off));
      cudnnTensorDescriptor_t d = tensor(1, 1, 1, len);
      TETHER_CUDNN_CHECK(
          cudnnActivationForward(cudnn_, relu_, &kOne, d, x + off, &kZero, d, y + off));
    }
  }

  void relu_backward(size_t count, const float* y, const float* dy, float* dx) override {
    use();
    for (size_t off = 0; off < count; off += kActivationChunk) {
      int len = int(std::min(kActivationChunk, count - off));
      cudnnTensorDescriptor_t d = tensor(1, 1, 1, len);
      // For ReLU, y > 0 exactly where x > 0, so y stands in for the input.
      TETHER_CUDNN_CHECK(cudnnActivationBackward(cudnn_, relu_, &kOne, d, y + off, d, dy + off, d,
                                                 y + off, &kZero, d, dx + off));
    }
  }

  // Pooling uses tether's kernels, not cuDNN: the interface hands backward the
  // argmax rather than (x, y), which cudnnPoolingBackward needs, and the
  // kernels break ties (first maximum) the way the CPU reference does.
  void pool_forward(PoolKind kind, const PoolShape& sh, const float* x, float* y,
                    int32_t* argmax) override {
    check_pool(sh);
    TETHER_GPU_ARG(kind != PoolKind::kMax || argmax != nullptr,
                   "pool_forward: max pooling needs an argmax buffer");
    use();
    gpu::launch_pool_forward(compute_, kind, sh, x, y, argmax);
  }

  void pool_backward(PoolKind kind, const PoolShape& sh, const float* dy, const int32_t* argmax,
                     float* dx) override {
    check_pool(sh);
    TETHER_GPU_ARG(kind != PoolKind::kMax || argmax != nullptr,
                   "pool_backward: max pooling needs the forward's argmax");
    use();
    gpu::launch_pool_backward(compute_, kind, sh, dy, argmax, dx);
  }

  void batchnorm_forward_train(const BatchNormShape& sh, const float* x, const float* gamma,
                               const float* beta, float momentum, float eps, float* running_mean,
                               float* running_var, float* save_mean, float* save_invstd,
                               float* y) override {
    check_bn(sh);
    TETHER_GPU_ARG(size_t(sh.n) * size_t(sh.hw) > 1,
                   "batchnorm_forward_train: needs more than one value per channel, got n="
                       << sh.n << " hw=" << sh.hw);
    use();
    cudnnTensorDescriptor_t xd = tensor(sh.n, sh.c, sh.hw, 1);
    cudnnTensorDescriptor_t pd = tensor(1, sh.c, 1, 1);
    // cuDNN: running = (1 - f)·running + f·batch with the unbiased batch
    // variance, so f = momentum gives PyTorch's update.
    TETHER_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        cudnn_, CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, xd, x, xd, y, pd, gamma, beta,
        double(momentum), running_mean, running_var, bn_eps(eps), save_mean, save_invstd));
  }

  void batchnorm_forward_eval(const BatchNormShape& sh, const float* x, const float* gamma,
                              const float* beta, const float* running_mean,
                              const float* running_var, float eps, float* y) override {
    check_bn(sh);
    if (sh.count() == 0) return;
    use();
    cudnnTensorDescriptor_t xd = tensor(sh.n, sh.c, sh.hw, 1);
    cudnnTensorDescriptor_t pd = tensor(1, sh.c, 1, 1);
    TETHER_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
        cudnn_, CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, xd, x, xd, y, pd, gamma, beta,
        running_mean, running_var, bn_eps(eps)));
  }

  void batchnorm_backward(const BatchNormShape& sh, const float* x, const float* gamma,
                          const float* dy, const float* save_mean, const float* save_invstd,
                          float* dx, float* dgamma, float* dbeta) override {
    check_bn(sh);
    if (sh.count() == 0) {
      use();
      if (dgamma != nullptr) gpu::launch_fill(compute_, size_t(sh.c), 0.0f, dgamma);
      if (dbeta != nullptr) gpu::launch_fill(compute_, size_t(sh.c), 0.0f, dbeta);
      return;
    }
    use();
    cudnnTensorDescriptor_t xd = tensor(sh.n, sh.c, sh.hw, 1);
    cudnnTensorDescriptor_t pd = tensor(1, sh.c, 1, 1);
    if (dgamma == nullptr || dbeta == nullptr) {
      auto* tmp = static_cast<float*>(scratch(kBnGrad, 2 * sizeof(float) * size_t(sh.c)));
      if (dgamma == nullptr) dgamma = tmp;
      if (dbeta == nullptr) dbeta = tmp + sh.c;
    }
    TETHER_GPU_ARG(dx != nullptr, "batchnorm_backward: dx must not be null");
    // With the saved mean and 1/std given, cuDNN does not use epsilon; it
    // only has to be a legal value.
    TETHER_CUDNN_CHECK(cudnnBatchNormalizationBackward(
        cudnn_, CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, &kOne, &kZero, xd, x, xd, dy, xd, dx, pd,
        gamma, dgamma, dbeta, bn_eps(1e-5f), save_mean, save_invstd));
  }

  void dropout_forward(size_t count, float p, uint64_t seed, const float* x, float* mask,
                       float* y) override {
    TETHER_GPU_ARG(p >= 0.0f && p < 1.0f, "dropout: p " << p << " outside [0, 1)");
    use();
    gpu::launch_dropout(compute_, count, p, seed, x, mask, y);
  }

  void softmax_xent(int n, int classes, const float* logits, const int32_t* labels,
                    float* dlogits, float* stats) override {
    TETHER_GPU_ARG(n >= 0 && classes > 0, "softmax_xent: n=" << n << " classes=" << classes);
    if (n == 0) return;
    use();
    auto* tmp =
        static_cast<float*>(scratch(kXent, sizeof(float) * gpu::softmax_xent_scratch_count(n)));
    gpu::launch_softmax_xent(compute_, n, classes, logits, labels, dlogits, stats, tmp,
                             bad_label_);
    label_check_pending_ = true;
  }

  void argmax_rows(int n, int classes, const float* logits, int32_t* pred) override {
    TETHER_GPU_ARG(n >= 0 && classes > 0, "argmax_rows: n=" << n << " classes=" << classes);
    use();
    gpu::launch_argmax_rows(compute_, n, classes, logits, pred);
  }

  // ---- vector algebra ----------------------------------------------------------------
  void fill(size_t count, float value, float* x) override {
    use();
    gpu::launch_fill(compute_, count, value, x);
  }
  void axpy(size_t count, float alpha, const float* x, float* y) override {
    use();
    gpu::launch_axpy(compute_, count, alpha, x, y);
  }
  void scale(size_t count, float alpha, float* x) override {
    use();
    gpu::launch_scale(compute_, count, alpha, x);
  }
  void add(size_t count, const float* a, const float* b, float* y) override {
    use();
    gpu::launch_add(compute_, count, a, b, y);
  }
  void sub(size_t count, const float* a, const float* b, float* y) override {
    use();
    gpu::launch_sub(compute_, count, a, b, y);
  }

  double dot(size_t count, const float* a, const float* b) override {
    if (count == 0) return 0.0;
    use();
    size_t n = gpu::dot_scratch_count();
    auto* tmp = static_cast<double*>(scratch(kReduce, sizeof(double) * n));
    gpu::launch_dot(compute_, count, a, b, tmp);
    double result = 0.0;
    read_back(&result, tmp + (n - 1), sizeof(double));
    return result;
  }

  bool all_finite(size_t count, const float* x) override {
    if (count == 0) return true;
    use();
    auto* bad = static_cast<int*>(scratch(kReduce, sizeof(double) * gpu::dot_scratch_count()));
    gpu::launch_all_finite(compute_, count, x, bad);
    int result = 0;
    read_back(&result, bad, sizeof(int));
    return result == 0;
  }

  void sgd_step(size_t count, float lr, float momentum, float weight_decay, bool nesterov,
                const float* g, float* m, float* w) override {
    use();
    gpu::launch_sgd(compute_, count, lr, momentum, weight_decay, nesterov, g, m, w);
  }

  void count_sketch(size_t count, const float* x, uint64_t seed, int buckets,
                    float* out) override {
    TETHER_GPU_ARG(buckets > 0, "count_sketch: buckets " << buckets << " must be positive");
    use();
    auto* acc = static_cast<double*>(scratch(kSketch, sizeof(double) * size_t(buckets)));
    gpu::launch_count_sketch(compute_, count, x, seed, buckets, acc, out);
  }

 private:
  void init() {
    use();
    int major = 0, minor = 0;
    TETHER_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index_));
    TETHER_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index_));
    if (major < kMinComputeMajor) {
      throw std::runtime_error(name() + ": compute capability " + std::to_string(major) + "." +
                               std::to_string(minor) +
                               " is too old; tether's CUDA kernels need 8.0 or newer");
    }
    int pools = 0;
    TETHER_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, index_));
    use_pool_ = pools != 0;
    if (use_pool_) {
      cudaMemPool_t pool = nullptr;
      TETHER_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, index_));
      uint64_t keep = UINT64_MAX;  // keep freed blocks cached for reuse
      TETHER_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    }
    TETHER_CUDA_CHECK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
    TETHER_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    TETHER_CUDA_CHECK(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
    TETHER_CUDA_CHECK(cudaEventCreateWithFlags(&copy_done_, cudaEventDisableTiming));
    for (int i = 0; i < kStageSlots; ++i) {
      TETHER_CUDA_CHECK(cudaEventCreateWithFlags(&stage_done_[i], cudaEventDisableTiming));
      TETHER_CUDA_CHECK(cudaHostAlloc(&stage_[i], kStageBytes, cudaHostAllocDefault));
    }
    TETHER_CUDA_CHECK(cudaHostAlloc(&small_host_, 64, cudaHostAllocDefault));
    bad_label_ = static_cast<int*>(device_alloc(2 * sizeof(int)));
    TETHER_CUDA_CHECK(cudaMemsetAsync(bad_label_, 0, 2 * sizeof(int), compute_));

    TETHER_CUBLAS_CHECK(cublasCreate(&cublas_));
    TETHER_CUBLAS_CHECK(cublasSetStream(cublas_, compute_));
    TETHER_CUBLAS_CHECK(
        cublasSetMathMode(cublas_, tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));

    TETHER_CUDNN_CHECK(cudnnCreate(&cudnn_));
    TETHER_CUDNN_CHECK(cudnnSetStream(cudnn_, compute_));
    TETHER_CUDNN_CHECK(cudnnCreateActivationDescriptor(&relu_));
    TETHER_CUDNN_CHECK(
        cudnnSetActivationDescriptor(relu_, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0));
  }

  // Frees everything; safe on a partly built object; never throws.
  void release() noexcept {
    TETHER_CUDA_WARN(cudaSetDevice(index_));
    if (compute_ != nullptr) TETHER_CUDA_WARN(cudaStreamSynchronize(compute_));
    if (copy_ != nullptr) TETHER_CUDA_WARN(cudaStreamSynchronize(copy_));
    if (bad_label_ != nullptr) scratch_[kLabelFlag] = {bad_label_, 2 * sizeof(int)};
    bad_label_ = nullptr;
    for (auto& s : scratch_) {
      if (s.ptr != nullptr) {
        if (use_pool_) {
          TETHER_CUDA_WARN(cudaFreeAsync(s.ptr, compute_));
        } else {
          TETHER_CUDA_WARN(cudaFree(s.ptr));
        }
      }
      s = {};
    }
    for (auto& [key, p] : plans_) {
      if (p.w != nullptr) TETHER_CUDNN_WARN(cudnnDestroyFilterDescriptor(p.w));
      if (p.conv != nullptr) TETHER_CUDNN_WARN(cudnnDestroyConvolutionDescriptor(p.conv));
    }
    plans_.clear();
    for (auto& [key, d] : tensors_) TETHER_CUDNN_WARN(cudnnDestroyTensorDescriptor(d));
    tensors_.clear();
    if (relu_ != nullptr) TETHER_CUDNN_WARN(cudnnDestroyActivationDescriptor(relu_));
    relu_ = nullptr;
    if (cudnn_ != nullptr) TETHER_CUDNN_WARN(cudnnDestroy(cudnn_));
    cudnn_ = nullptr;
    if (cublas_ != nullptr) TETHER_CUBLAS_WARN(cublasDestroy(cublas_));
    cublas_ = nullptr;
    if (compute_ != nullptr) TETHER_CUDA_WARN(cudaStreamSynchronize(compute_));
    for (int i = 0; i < kStageSlots; ++i) {
      if (stage_[i] != nullptr) TETHER_CUDA_WARN(cudaFreeHost(stage_[i]));
      if (stage_done_[i] != nullptr) TETHER_CUDA_WARN(cudaEventDestroy(stage_done_[i]));
      stage_[i] = nullptr;
      stage_done_[i] = nullptr;
    }
    if (small_host_ != nullptr) TETHER_CUDA_WARN(cudaFreeHost(small_host_));
    small_host_ = nullptr;
    if (compute_done_ != nullptr) TETHER_CUDA_WARN(cudaEventDestroy(compute_done_));
    if (copy_done_ != nullptr) TETHER_CUDA_WARN(cudaEventDestroy(copy_done_));
    compute_done_ = copy_done_ = nullptr;
    if (copy_ != nullptr) TETHER_CUDA_WARN(cudaStreamDestroy(copy_));
    if (compute_ != nullptr) TETHER_CUDA_WARN(cudaStreamDestroy(compute_));
    copy_ = compute_ = nullptr;
  }

  void* device_alloc(size_t bytes) {
    void* p = nullptr;
    cudaError_t e = use_pool_ ? cudaMallocAsync(&p, bytes, compute_) : cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      throw std::runtime_error(name() + ": cannot allocate " + std::to_string(bytes) +
                               " bytes of device memory: " + gpu::cuda_error_text(e));
    }
    return p;
  }
  void device_free(void* p) {
    if (use_pool_) {
      TETHER_CUDA_CHECK(cudaFreeAsync(p, compute_));
    } else {
      TETHER_CUDA_CHECK(cudaFree(p));
    }
  }

  // A scratch buffer of at least `bytes`, valid until the next call for the
  // same slot. Growing frees the old one in stream order.
  void* scratch(ScratchSlot slot, size_t bytes) {
    auto& s = scratch_[slot];
    if (s.bytes < bytes) {
      if (s.ptr != nullptr) device_free(s.ptr);
      s = {};
      s.ptr = device_alloc(bytes);
      s.bytes = bytes;
    }
    return s.ptr;
  }

  // Host waits: copy `bytes` (<= 64) of device memory after the compute stream.
  void read_back(void* host, const void* dev, size_t bytes) {
    TETHER_CUDA_CHECK(cudaMemcpyAsync(small_host_, dev, bytes, cudaMemcpyDeviceToHost, compute_));
    TETHER_CUDA_CHECK(cudaStreamSynchronize(compute_));
    std::memcpy(host, small_host_, bytes);
    check_labels();
  }

  // softmax_xent cannot look at labels (device memory) without waiting, so
  // its kernel flags a bad one and the next call that waits anyway (download,
  // dot, all_finite, synchronize) throws the CPU backend's error.
  void check_labels() {
    if (!label_check_pending_) return;
    label_check_pending_ = false;
    int* flag = reinterpret_cast<int*>(static_cast<char*>(small_host_) + 32);
    TETHER_CUDA_CHECK(
        cudaMemcpyAsync(flag, bad_label_, 2 * sizeof(int), cudaMemcpyDeviceToHost, compute_));
    TETHER_CUDA_CHECK(cudaStreamSynchronize(compute_));
    if (flag[0] != 0) {
      int row = flag[0] - 1, label = flag[1];
      TETHER_CUDA_CHECK(cudaMemsetAsync(bad_label_, 0, 2 * sizeof(int), compute_));
      TETHER_GPU_ARG(false, "softmax_xent: label " << label << " of row " << row
                                                  << " outside [0, classes)");
    }
  }

  void copy_after_compute() {
    TETHER_CUDA_CHECK(cudaEventRecord(compute_done_, compute_));
    TETHER_CUDA_CHECK(cudaStreamWaitEvent(copy_, compute_done_, 0));
  }

  static double bn_eps(float eps) { return std::max(double(eps), double(CUDNN_BN_MIN_EPSILON)); }

  // Cached NCHW float descriptor.
  cudnnTensorDescriptor_t tensor(int n, int c, int h, int w) {
    std::array<int, 4> key{n, c, h, w};
    auto it = tensors_.find(key);
    if (it != tensors_.end()) return it->second;
    cudnnTensorDescriptor_t d = nullptr;
    TETHER_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    cudnnStatus_t s = cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w);
    if (s != CUDNN_STATUS_SUCCESS) {
      TETHER_CUDNN_WARN(cudnnDestroyTensorDescriptor(d));
      TETHER_CUDNN_CHECK(s);
    }
    tensors_.emplace(key, d);
    return d;
  }

  ConvPlan& plan(const ConvShape& sh) {
    std::array<int, 9> key{sh.n, sh.c, sh.h, sh.w, sh.k, sh.r, sh.s, sh.stride, sh.pad};
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    ConvPlan& p = plans_[key];
    try {
      p.x = tensor(sh.n, sh.c, sh.h, sh.w);
      p.y = tensor(sh.n, sh.k, sh.oh(), sh.ow());
      p.bias = tensor(1, sh.k, 1, 1);
      TETHER_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p.w));
      TETHER_CUDNN_CHECK(cudnnSetFilter4dDescriptor(p.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, sh.k,
                                                    sh.c, sh.r, sh.s));
      TETHER_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv));
      TETHER_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p.conv, sh.pad, sh.pad, sh.stride,
                                                         sh.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                                         CUDNN_DATA_FLOAT));
      int on = 0, ok = 0, oh = 0, ow = 0;
      TETHER_CUDNN_CHECK(
          cudnnGetConvolution2dForwardOutputDim(p.conv, p.x, p.w, &on, &ok, &oh, &ow));
      if (on != sh.n || ok != sh.k || oh != sh.oh() || ow != sh.ow()) {
        throw std::logic_error(name() + ": cuDNN convolution output shape disagrees with ConvShape");
      }
      find_forward(p);
    } catch (...) {
      if (p.w != nullptr) TETHER_CUDNN_WARN(cudnnDestroyFilterDescriptor(p.w));
      if (p.conv != nullptr) TETHER_CUDNN_WARN(cudnnDestroyConvolutionDescriptor(p.conv));
      plans_.erase(key);
      throw;
    }
    return p;
  }

  static bool not_supported(cudnnStatus_t st) {
    return CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED;
  }
  // The algorithm cuDNN's search chose refused to run with the math type we
  // need: the plan switches to the plain, workspace-free algorithm.
  void note_fallback(const char* what, const ConvShape& sh) {
    std::fprintf(stderr,
                 "tether: %s: cuDNN %s algorithm not supported for conv n=%d c=%d h=%d w=%d k=%d "
                 "r=%d s=%d stride=%d pad=%d; using the implicit-GEMM algorithm\n",
                 name().c_str(), what, sh.n, sh.c, sh.h, sh.w, sh.k, sh.r, sh.s, sh.stride, sh.pad);
  }

  cudnnMathType_t search_math() const { return tf32_ ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }
  cudnnMathType_t run_math(cudnnMathType_t found) const { return tf32_ ? found : CUDNN_FMA_MATH; }

  void find_forward(ConvPlan& p) {
    TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, search_math()));
    std::array<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT> perf{};
    int returned = 0;
    const cudnnConvolutionFwdAlgoPerf_t* best = nullptr;
    if (cudnnFindConvolutionForwardAlgorithm(cudnn_, p.x, p.w, p.conv, p.y, int(perf.size()),
                                             &returned, perf.data()) == CUDNN_STATUS_SUCCESS) {
      best = pick_algo(perf.data(), returned, tf32_);
    }
    if (best == nullptr) {
      TETHER_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
          cudnn_, p.x, p.w, p.conv, p.y, int(perf.size()), &returned, perf.data()));
      best = pick_algo(perf.data(), returned, tf32_);
    }
    // No ranked algorithm: the plain one, which supports every float convolution.
    p.fwd = best != nullptr ? best->algo : CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    p.fwd_math = best != nullptr ? run_math(best->mathType) : search_math();
    TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.fwd_math));
    TETHER_CUDNN_CHECK(
        cudnnGetConvolutionForwardWorkspaceSize(cudnn_, p.x, p.w, p.conv, p.y, p.fwd, &p.fwd_ws));
  }

  void find_backward(ConvPlan& p) {
    {
      TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, search_math()));
      std::array<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT> perf{};
      int returned = 0;
      const cudnnConvolutionBwdDataAlgoPerf_t* best = nullptr;
      if (cudnnFindConvolutionBackwardDataAlgorithm(cudnn_, p.w, p.y, p.conv, p.x,
                                                    int(perf.size()), &returned,
                                                    perf.data()) == CUDNN_STATUS_SUCCESS) {
        best = pick_algo(perf.data(), returned, tf32_);
      }
      if (best == nullptr) {
        TETHER_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            cudnn_, p.w, p.y, p.conv, p.x, int(perf.size()), &returned, perf.data()));
        best = pick_algo(perf.data(), returned, tf32_);
      }
      p.bwd_data = best != nullptr ? best->algo : CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
      p.bwd_data_math = best != nullptr ? run_math(best->mathType) : search_math();
      TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_data_math));
      TETHER_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
          cudnn_, p.w, p.y, p.conv, p.x, p.bwd_data, &p.bwd_data_ws));
    }
    {
      TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, search_math()));
      std::array<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>
          perf{};
      int returned = 0;
      const cudnnConvolutionBwdFilterAlgoPerf_t* best = nullptr;
      if (cudnnFindConvolutionBackwardFilterAlgorithm(cudnn_, p.x, p.y, p.conv, p.w,
                                                      int(perf.size()), &returned,
                                                      perf.data()) == CUDNN_STATUS_SUCCESS) {
        best = pick_algo(perf.data(), returned, tf32_);
      }
      if (best == nullptr) {
        TETHER_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            cudnn_, p.x, p.y, p.conv, p.w, int(perf.size()), &returned, perf.data()));
        best = pick_algo(perf.data(), returned, tf32_);
      }
      p.bwd_filter = best != nullptr ? best->algo : CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0;
      p.bwd_filter_math = best != nullptr ? run_math(best->mathType) : search_math();
      TETHER_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_filter_math));
      TETHER_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
          cudnn_, p.x, p.y, p.conv, p.w, p.bwd_filter, &p.bwd_filter_ws));
    }
    p.have_bwd = true;
  }

  struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  int index_;
  bool tf32_;
  bool use_pool_ = false;
  cudaStream_t compute_ = nullptr;
  cudaStream_t copy_ = nullptr;
  cudaEvent_t compute_done_ = nullptr;  // recorded on compute_, waited on by copy_
  cudaEvent_t copy_done_ = nullptr;     // recorded on copy_, waited on by compute_
  std::array<void*, kStageSlots> stage_{};           // pinned staging slots
  std::array<cudaEvent_t, kStageSlots> stage_done_{};  // last DMA of each slot
  int next_slot_ = 0;                                  // round-robin over the slots
  void* small_host_ = nullptr;  // pinned: [0, 16) read_back, [32, 40) the bad-label flag
  int* bad_label_ = nullptr;    // device {row + 1, label} of a label softmax_xent rejected
  bool label_check_pending_ = false;
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cudnnActivationDescriptor_t relu_ = nullptr;
  std::array<Scratch, kScratchSlots> scratch_{};
  std::map<std::array<int, 4>, cudnnTensorDescriptor_t> tensors_;
  std::map<std::array<int, 9>, ConvPlan> plans_;
};

// ---- device discovery ---------------------------------------------------------------------

int cuda_device_count(std::string* why) {
  auto say = [why](const std::string& s) {
    if (why != nullptr) *why = s;
  };
  try {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      int driver = 0;
      (void)cudaDriverGetVersion(&driver);
      std::string runtime = std::to_string(CUDART_VERSION / 1000) + "." +
                            std::to_string(CUDART_VERSION % 1000 / 10);
      std::string code = std::string(" (") + cudaGetErrorName(e) + ")";
      if (e == cudaErrorNoDevice) {
        say("no CUDA-capable device is present" + code);
      } else if (e == cudaErrorInsufficientDriver && driver == 0) {
        say("no NVIDIA driver is installed (libcuda.so.1 not found)" + code);
      } else if (e == cudaErrorInsufficientDriver) {
        say("the NVIDIA driver supports CUDA " + std::to_string(driver / 1000) + "." +
            std::to_string(driver % 1000 / 10) + ", older than the CUDA " + runtime +
            " runtime tether was built with" + code);
      } else {
        say(std::string("cudaGetDeviceCount failed: ") + gpu::cuda_error_text(e));
      }
      return 0;
    }
    if (count <= 0) {
      say("no CUDA-capable device is present");
      return 0;
    }
    for (int d = 0; d < count; ++d) {
      int major = 0, minor = 0;
      if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) != cudaSuccess ||
          cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d) != cudaSuccess) {
        (void)cudaGetLastError();
        say(device_name(d) + ": cannot query its compute capability");
        return d;
      }
      if (major < kMinComputeMajor) {
        say(device_name(d) + " has compute capability " + std::to_string(major) + "." +
            std::to_string(minor) + "; tether's CUDA kernels need 8.0 or newer");
        return d;
      }
    }
    return count;
  } catch (const std::exception& ex) {
    say(std::string("CUDA device query failed: ") + ex.what());
    return 0;
  }
}

std::unique_ptr<Backend> make_cuda_backend(int index, const BackendOptions& opts) {
  std::string why;
  int count = cuda_device_count(&why);
  if (index < 0 || index >= count) {
    throw std::runtime_error("device " + device_name(index) + ": not available (" +
                             (count == 0 ? why : std::to_string(count) + " usable CUDA device(s)") +
                             ")");
  }
  return std::make_unique<CudaBackend>(index, opts);
}

// ---- PinnedStager -------------------------------------------------------------------------

struct PinnedStager::Impl {
  CudaBackend* be = nullptr;
  size_t capacity = 0;
  float* host = nullptr;      // pinned
  float* snapshot = nullptr;  // device, allocated at the first download
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;  // recorded on compute, waited on by stream
  cudaEvent_t done = nullptr;   // recorded on stream after each transfer
  bool issued = false;

  ~Impl() {
    if (be == nullptr) return;
    TETHER_CUDA_WARN(cudaSetDevice(be->index()));
    if (stream != nullptr) TETHER_CUDA_WARN(cudaStreamSynchronize(stream));
    if (snapshot != nullptr) {
      try {
        be->free_bytes(snapshot);
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "tether: PinnedStager: %s\n", ex.what());
      }
    }
    if (host != nullptr) TETHER_CUDA_WARN(cudaFreeHost(host));
    if (done != nullptr) TETHER_CUDA_WARN(cudaEventDestroy(done));
    if (start != nullptr) TETHER_CUDA_WARN(cudaEventDestroy(start));
    if (stream != nullptr) TETHER_CUDA_WARN(cudaStreamDestroy(stream));
  }

  void check_count(size_t count, const char* what) const {
    if (count > capacity) {
      throw std::invalid_argument(std::string("PinnedStager::") + what + ": " +
                                  std::to_string(count) + " floats exceed the capacity of " +
                                  std::to_string(capacity));
    }
  }
};

PinnedStager::PinnedStager(Backend& backend, size_t capacity) : impl_(std::make_unique<Impl>()) {
  auto* be = dynamic_cast<CudaBackend*>(&backend);
  if (be == nullptr) {
    throw std::invalid_argument("PinnedStager needs a CUDA backend, got \"" + backend.name() +
                                "\"");
  }
  be->use();
  impl_->be = be;
  impl_->capacity = capacity;
  TETHER_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
  TETHER_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->start, cudaEventDisableTiming));
  TETHER_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->done, cudaEventDisableTiming));
  TETHER_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&impl_->host),
                                  std::max<size_t>(capacity, 1) * sizeof(float),
                                  cudaHostAllocDefault));
}

PinnedStager::~PinnedStager() = default;

size_t PinnedStager::capacity() const { return impl_->capacity; }
float* PinnedStager::host() { return impl_->host; }
const float* PinnedStager::host() const { return impl_->host; }

void PinnedStager::begin_download(const float* dev, size_t count) {
  Impl& s = *impl_;
  s.check_count(count, "begin_download");
  if (count == 0) return;
  s.be->use();
  cudaStream_t compute = s.be->compute_stream();
  if (s.snapshot == nullptr) {
    s.snapshot = static_cast<float*>(s.be->alloc_bytes(s.capacity * sizeof(float)));
  }
  // The previous transfer may still read the snapshot: compute waits for it.
  if (s.issued) TETHER_CUDA_CHECK(cudaStreamWaitEvent(compute, s.done, 0));
  TETHER_CUDA_CHECK(cudaMemcpyAsync(s.snapshot, dev, count * sizeof(float),
                                    cudaMemcpyDeviceToDevice, compute));
  TETHER_CUDA_CHECK(cudaEventRecord(s.start, compute));
  TETHER_CUDA_CHECK(cudaStreamWaitEvent(s.stream, s.start, 0));
  TETHER_CUDA_CHECK(cudaMemcpyAsync(s.host, s.snapshot, count * sizeof(float),
                                    cudaMemcpyDeviceToHost, s.stream));
  TETHER_CUDA_CHECK(cudaEventRecord(s.done, s.stream));
  s.issued = true;
}

void PinnedStager::begin_upload(float* dev, size_t count) {
  Impl& s = *impl_;
  s.check_count(count, "begin_upload");
  if (count == 0) return;
  s.be->use();
  cudaStream_t compute = s.be->compute_stream();
  // Compute issued before this call may still read dev.
  TETHER_CUDA_CHECK(cudaEventRecord(s.start, compute));
  TETHER_CUDA_CHECK(cudaStreamWaitEvent(s.stream, s.start, 0));
  TETHER_CUDA_CHECK(
      cudaMemcpyAsync(dev, s.host, count * sizeof(float), cudaMemcpyHostToDevice, s.stream));
  TETHER_CUDA_CHECK(cudaEventRecord(s.done, s.stream));
  TETHER_CUDA_CHECK(cudaStreamWaitEvent(compute, s.done, 0));
  s.issued = true;
}

bool PinnedStager::ready() const {
  if (!impl_->issued) return true;
  cudaError_t e = cudaEventQuery(impl_->done);
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  TETHER_CUDA_CHECK(e);
  return true;
}

void PinnedStager::wait() {
  if (!impl_->issued) return;
  TETHER_CUDA_CHECK(cudaEventSynchronize(impl_->done));
}

}  // namespace tether
