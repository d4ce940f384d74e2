// tether's own CUDA kernels; see gpu/kernels.h for what each computes.
// Element math comes from models/kernel_math.h (shared with the CPU backend).
// Reductions use a fixed grid and a fixed combination order, so their results
// do not depend on scheduling (count_sketch: see its comment).
#include "gpu/kernels.h"

#include <algorithm>
#include <cfloat>
#include <climits>

#include "gpu/cuda_check.h"
#include "models/kernel_math.h"

namespace tether::gpu {

namespace {

constexpr int kThreads = 256;            // threads per block of element-wise kernels
constexpr size_t kMaxBlocks = 65536;     // grid cap; kernels loop grid-stride beyond it
constexpr int kDotBlocks = 512;          // fixed grid of launch_dot (determinism)
constexpr int kSharedBuckets = 4096;     // count_sketch: per-block histogram in shared memory
constexpr int kRowWarps = 4;             // warps (rows) per block in row kernels

unsigned grid_for(size_t count) {
  return unsigned(std::min((count + kThreads - 1) / kThreads, kMaxBlocks));
}

__device__ __forceinline__ size_t thread_index() {
  return size_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ size_t grid_stride() { return size_t(blockDim.x) * gridDim.x; }

void check_launch() { TETHER_CUDA_CHECK(cudaGetLastError()); }

// ---- element-wise ------------------------------------------------------------

__global__ void fill_kernel(size_t count, float value, float* x) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) x[i] = value;
}
__global__ void axpy_kernel(size_t count, float alpha, const float* x, float* y) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) y[i] += alpha * x[i];
}
__global__ void scale_kernel(size_t count, float alpha, float* x) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) x[i] *= alpha;
}
__global__ void add_kernel(size_t count, const float* a, const float* b, float* y) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) y[i] = a[i] + b[i];
}
__global__ void sub_kernel(size_t count, const float* a, const float* b, float* y) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) y[i] = a[i] - b[i];
}
__global__ void normalize_bytes_kernel(size_t count, const uint8_t* src, float mean,
                                       float inv_std, float* dst) {
  for (size_t i = thread_index(); i < count; i += grid_stride())
    dst[i] = kmath::normalize_byte(src[i], mean, inv_std);
}
__global__ void dropout_kernel(size_t count, float p, uint64_t seed, const float* x,
                               float* mask, float* y) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) {
    float m = kmath::dropout_mask(seed, i, p);
    mask[i] = m;
    y[i] = x[i] * m;
  }
}
__global__ void sgd_kernel(size_t count, float lr, float momentum, float weight_decay,
                           bool nesterov, const float* g, float* m, float* w) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) {
    float mi = m[i];
    float wi = w[i];
    kmath::sgd_element(lr, momentum, weight_decay, nesterov, g[i], mi, wi);
    m[i] = mi;
    w[i] = wi;
  }
}

// ---- rows and columns ----------------------------------------------------------

__global__ void add_row_bias_kernel(size_t count, int cols, const float* b, float* y) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) y[i] += b[i % size_t(cols)];
}

// Block (32, 8): threadIdx.x picks the column, threadIdx.y strides the rows;
// the 8 partial sums of a column are then added in y order.
constexpr int kColX = 32, kColY = 8;
__global__ void col_sum_kernel(int rows, int cols, const float* x, float* out) {
  __shared__ float part[kColY][kColX];
  int j = blockIdx.x * kColX + threadIdx.x;
  float s = 0.0f;
  if (j < cols) {
    for (int r = threadIdx.y; r < rows; r += kColY) s += x[size_t(r) * cols + j];
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    float t = 0.0f;
    for (int k = 0; k < kColY; ++k) t += part[k][threadIdx.x];
    out[j] = t;
  }
}

// ---- pooling -------------------------------------------------------------------

__global__ void max_pool_forward_kernel(PoolShape sh, int oh, int ow, const float* x, float* y,
                                        int32_t* argmax) {
  size_t total = size_t(sh.n) * sh.c * oh * ow;
  for (size_t o = thread_index(); o < total; o += grid_stride()) {
    int ox = int(o % ow);
    int oy = int((o / ow) % oh);
    size_t plane = o / (size_t(ow) * oh);  // n * C + c
    size_t base = plane * sh.h * sh.w;
    int y0 = oy * sh.stride - sh.pad, x0 = ox * sh.stride - sh.pad;
    int ya = max(y0, 0), yb = min(y0 + sh.kernel, sh.h);
    int xa = max(x0, 0), xb = min(x0 + sh.kernel, sh.w);
    // PyTorch's rule, as the CPU backend: take v when v > best or v is NaN
    // (the first maximum wins; NaN propagates).
    float best = -INFINITY;
    int32_t best_i = int32_t(base + size_t(ya) * sh.w + xa);
    for (int iy = ya; iy < yb; ++iy) {
      for (int ix = xa; ix < xb; ++ix) {
        int32_t idx = int32_t(base + size_t(iy) * sh.w + ix);
        float v = x[idx];
        if (v > best || isnan(v)) {
          best = v;
          best_i = idx;
        }
      }
    }
    y[o] = best;
    if (argmax != nullptr) argmax[o] = best_i;
  }
}

__global__ void avg_pool_forward_kernel(PoolShape sh, int oh, int ow, const float* x, float* y) {
  size_t total = size_t(sh.n) * sh.c * oh * ow;
  float inv_window = 1.0f / float(sh.kernel * sh.kernel);  // count_include_pad
  for (size_t o = thread_index(); o < total; o += grid_stride()) {
    int ox = int(o % ow);
    int oy = int((o / ow) % oh);
    size_t plane = o / (size_t(ow) * oh);
    const float* xp = x + plane * sh.h * sh.w;
    int y0 = oy * sh.stride - sh.pad, x0 = ox * sh.stride - sh.pad;
    float s = 0.0f;
    for (int ky = 0; ky < sh.kernel; ++ky) {
      int iy = y0 + ky;
      if (iy < 0 || iy >= sh.h) continue;
      for (int kx = 0; kx < sh.kernel; ++kx) {
        int ix = x0 + kx;
        if (ix < 0 || ix >= sh.w) continue;
        s += xp[size_t(iy) * sh.w + ix];
      }
    }
    y[o] = s * inv_window;
  }
}

// Output rows/cols whose window covers input row `i`: [first, last).
__device__ __forceinline__ void covering(int i, int pad, int kernel, int stride, int outn,
                                         int& first, int& last) {
  int p = i + pad;
  first = p < kernel ? 0 : (p - kernel) / stride + 1;
  last = min(p / stride + 1, outn);
}

__global__ void pool_backward_kernel(bool is_max, PoolShape sh, int oh, int ow, const float* dy,
                                     const int32_t* argmax, float* dx) {
  size_t total = size_t(sh.n) * sh.c * sh.h * sh.w;
  float inv_window = 1.0f / float(sh.kernel * sh.kernel);
  for (size_t i = thread_index(); i < total; i += grid_stride()) {
    int ix = int(i % sh.w);
    int iy = int((i / sh.w) % sh.h);
    size_t plane = i / (size_t(sh.w) * sh.h);
    size_t obase = plane * oh * ow;
    int oy0, oy1, ox0, ox1;
    covering(iy, sh.pad, sh.kernel, sh.stride, oh, oy0, oy1);
    covering(ix, sh.pad, sh.kernel, sh.stride, ow, ox0, ox1);
    float s = 0.0f;
    for (int oy = oy0; oy < oy1; ++oy) {
      for (int ox = ox0; ox < ox1; ++ox) {
        size_t o = obase + size_t(oy) * ow + ox;
        if (is_max) {
          if (argmax[o] == int32_t(i)) s += dy[o];
        } else {
          s += dy[o] * inv_window;
        }
      }
    }
    dx[i] = s;
  }
}

// ---- classification ------------------------------------------------------------

struct MaxIdx {
  float v;
  int i;
};
__device__ __forceinline__ MaxIdx better(MaxIdx a, MaxIdx b) {
  if (b.i == INT_MAX) return a;
  if (a.i == INT_MAX) return b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}
// Warp-wide (value, index) maximum: largest value, lowest index among equals.
__device__ __forceinline__ MaxIdx warp_argmax(const float* row, int classes, int lane) {
  MaxIdx m{-INFINITY, INT_MAX};
  for (int j = lane; j < classes; j += 32) {
    float v = row[j];
    if (m.i == INT_MAX || v > m.v) m = MaxIdx{v, j};
  }
  for (int off = 16; off > 0; off >>= 1) {
    MaxIdx o{__shfl_xor_sync(0xffffffffu, m.v, off), __shfl_xor_sync(0xffffffffu, m.i, off)};
    m = better(m, o);
  }
  return m;
}

// One warp per row.
__global__ void softmax_xent_rows_kernel(int n, int classes, const float* logits,
                                         const int32_t* labels, float* dlogits, float* row_loss,
                                         float* row_correct, int* bad_label) {
  int lane = threadIdx.x & 31;
  int row = blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (row >= n) return;
  const float* l = logits + size_t(row) * classes;
  MaxIdx m = warp_argmax(l, classes, lane);
  float mx = m.v;
  float sum = 0.0f;
  for (int j = lane; j < classes; j += 32) sum += expf(l[j] - mx);
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  int label = labels[row];
  bool valid = label >= 0 && label < classes;
  if (dlogits != nullptr) {
    float inv_sum = 1.0f / sum, inv_n = 1.0f / float(n);
    float* d = dlogits + size_t(row) * classes;
    for (int j = lane; j < classes; j += 32) {
      float p = expf(l[j] - mx) * inv_sum;
      d[j] = (p - (j == label ? 1.0f : 0.0f)) * inv_n;
    }
  }
  if (lane == 0) {
    if (!valid && atomicCAS(&bad_label[0], 0, row + 1) == 0) bad_label[1] = label;
    row_loss[row] = valid ? logf(sum) - (l[label] - mx) : NAN;
    row_correct[row] = (valid && m.i == label) ? 1.0f : 0.0f;
  }
}

// One block sums the rows in a fixed order and adds to stats.
constexpr int kSumThreads = 256;
__global__ void softmax_xent_sum_kernel(int n, const float* row_loss, const float* row_correct,
                                        float* stats) {
  __shared__ double loss[kSumThreads];
  __shared__ double correct[kSumThreads];
  double l = 0.0, c = 0.0;
  for (int i = threadIdx.x; i < n; i += kSumThreads) {
    l += row_loss[i];
    c += row_correct[i];
  }
  loss[threadIdx.x] = l;
  correct[threadIdx.x] = c;
  __syncthreads();
  for (int s = kSumThreads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) {
      loss[threadIdx.x] += loss[threadIdx.x + s];
      correct[threadIdx.x] += correct[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[0] += float(loss[0]);
    stats[1] += float(correct[0]);
  }
}

__global__ void argmax_rows_kernel(int n, int classes, const float* logits, int32_t* pred) {
  int lane = threadIdx.x & 31;
  int row = blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (row >= n) return;
  MaxIdx m = warp_argmax(logits + size_t(row) * classes, classes, lane);
  if (lane == 0) pred[row] = m.i == INT_MAX ? 0 : m.i;
}

// ---- reductions ---------------------------------------------------------------------

__device__ __forceinline__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  return shared[0];
}

__global__ void dot_partial_kernel(size_t count, const float* a, const float* b,
                                   double* partials) {
  __shared__ double shared[kThreads];
  double s = 0.0;
  for (size_t i = thread_index(); i < count; i += grid_stride()) s += double(a[i]) * double(b[i]);
  double t = block_sum(s, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

__global__ void dot_final_kernel(const double* partials, double* out) {
  __shared__ double shared[kDotBlocks];
  double t = block_sum(partials[threadIdx.x], shared);
  if (threadIdx.x == 0) *out = t;
}

__global__ void all_finite_kernel(size_t count, const float* x, int* bad) {
  bool any = false;
  for (size_t i = thread_index(); i < count; i += grid_stride()) any |= !isfinite(x[i]);
  if (__syncthreads_or(any) && threadIdx.x == 0) *bad = 1;
}

__global__ void sketch_shared_kernel(size_t count, const float* x, uint64_t seed, int buckets,
                                     double* acc) {
  extern __shared__ double hist[];
  for (int b = threadIdx.x; b < buckets; b += blockDim.x) hist[b] = 0.0;
  __syncthreads();
  for (size_t i = thread_index(); i < count; i += grid_stride()) {
    uint32_t b = kmath::sketch_bucket(seed, i, uint32_t(buckets));
    atomicAdd(&hist[b], double(kmath::sketch_sign(seed, i)) * double(x[i]));
  }
  __syncthreads();
  for (int b = threadIdx.x; b < buckets; b += blockDim.x) {
    if (hist[b] != 0.0) atomicAdd(&acc[b], hist[b]);
  }
}

__global__ void sketch_global_kernel(size_t count, const float* x, uint64_t seed, int buckets,
                                     double* acc) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) {
    uint32_t b = kmath::sketch_bucket(seed, i, uint32_t(buckets));
    atomicAdd(&acc[b], double(kmath::sketch_sign(seed, i)) * double(x[i]));
  }
}

__global__ void double_to_float_kernel(size_t count, const double* in, float* out) {
  for (size_t i = thread_index(); i < count; i += grid_stride()) out[i] = float(in[i]);
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------

void launch_fill(cudaStream_t stream, size_t count, float value, float* x) {
  if (count == 0) return;
  fill_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, value, x);
  check_launch();
}
void launch_axpy(cudaStream_t stream, size_t count, float alpha, const float* x, float* y) {
  if (count == 0) return;
  axpy_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, alpha, x, y);
  check_launch();
}
void launch_scale(cudaStream_t stream, size_t count, float alpha, float* x) {
  if (count == 0) return;
  scale_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, alpha, x);
  check_launch();
}
void launch_add(cudaStream_t stream, size_t count, const float* a, const float* b, float* y) {
  if (count == 0) return;
  add_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, a, b, y);
  check_launch();
}
void launch_sub(cudaStream_t stream, size_t count, const float* a, const float* b, float* y) {
  if (count == 0) return;
  sub_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, a, b, y);
  check_launch();
}
void launch_normalize_bytes(cudaStream_t stream, size_t count, const uint8_t* src, float mean,
                            float inv_std, float* dst) {
  if (count == 0) return;
  normalize_bytes_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, src, mean, inv_std,
                                                                   dst);
  check_launch();
}
void launch_dropout(cudaStream_t stream, size_t count, float p, uint64_t seed, const float* x,
                    float* mask, float* y) {
  if (count == 0) return;
  dropout_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, p, seed, x, mask, y);
  check_launch();
}
void launch_sgd(cudaStream_t stream, size_t count, float lr, float momentum, float weight_decay,
                bool nesterov, const float* g, float* m, float* w) {
  if (count == 0) return;
  sgd_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, lr, momentum, weight_decay,
                                                       nesterov, g, m, w);
  check_launch();
}

void launch_add_row_bias(cudaStream_t stream, int rows, int cols, const float* b, float* y) {
  size_t count = size_t(rows) * size_t(cols);
  if (count == 0) return;
  add_row_bias_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, cols, b, y);
  check_launch();
}
void launch_col_sum(cudaStream_t stream, int rows, int cols, const float* x, float* out) {
  if (cols <= 0) return;
  dim3 block(kColX, kColY);
  col_sum_kernel<<<unsigned((cols + kColX - 1) / kColX), block, 0, stream>>>(rows, cols, x, out);
  check_launch();
}

void launch_pool_forward(cudaStream_t stream, PoolKind kind, const PoolShape& sh, const float* x,
                         float* y, int32_t* argmax) {
  size_t count = sh.out_count();
  if (count == 0) return;
  if (kind == PoolKind::kMax) {
    max_pool_forward_kernel<<<grid_for(count), kThreads, 0, stream>>>(sh, sh.oh(), sh.ow(), x, y,
                                                                      argmax);
  } else {
    avg_pool_forward_kernel<<<grid_for(count), kThreads, 0, stream>>>(sh, sh.oh(), sh.ow(), x, y);
  }
  check_launch();
}
void launch_pool_backward(cudaStream_t stream, PoolKind kind, const PoolShape& sh,
                          const float* dy, const int32_t* argmax, float* dx) {
  size_t count = sh.in_count();
  if (count == 0) return;
  pool_backward_kernel<<<grid_for(count), kThreads, 0, stream>>>(kind == PoolKind::kMax, sh,
                                                                 sh.oh(), sh.ow(), dy, argmax, dx);
  check_launch();
}

size_t softmax_xent_scratch_count(int n) { return 2 * size_t(std::max(n, 0)); }

void launch_softmax_xent(cudaStream_t stream, int n, int classes, const float* logits,
                         const int32_t* labels, float* dlogits, float* stats, float* scratch,
                         int* bad_label) {
  if (n <= 0 || classes <= 0) return;
  unsigned blocks = unsigned((n + kRowWarps - 1) / kRowWarps);
  softmax_xent_rows_kernel<<<blocks, kRowWarps * 32, 0, stream>>>(
      n, classes, logits, labels, dlogits, scratch, scratch + n, bad_label);
  check_launch();
  softmax_xent_sum_kernel<<<1, kSumThreads, 0, stream>>>(n, scratch, scratch + n, stats);
  check_launch();
}
void launch_argmax_rows(cudaStream_t stream, int n, int classes, const float* logits,
                        int32_t* pred) {
  if (n <= 0 || classes <= 0) return;
  unsigned blocks = unsigned((n + kRowWarps - 1) / kRowWarps);
  argmax_rows_kernel<<<blocks, kRowWarps * 32, 0, stream>>>(n, classes, logits, pred);
  check_launch();
}

size_t dot_scratch_count() { return kDotBlocks + 1; }

void launch_dot(cudaStream_t stream, size_t count, const float* a, const float* b,
                double* scratch) {
  // Always kDotBlocks partials (zero where a block has no elements): the
  // reduction tree, hence the rounding, depends on nothing but the inputs.
  dot_partial_kernel<<<kDotBlocks, kThreads, 0, stream>>>(count, a, b, scratch);
  check_launch();
  dot_final_kernel<<<1, kDotBlocks, 0, stream>>>(scratch, scratch + kDotBlocks);
  check_launch();
}

void launch_all_finite(cudaStream_t stream, size_t count, const float* x, int* bad) {
  TETHER_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int), stream));
  if (count == 0) return;
  all_finite_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, x, bad);
  check_launch();
}

void launch_count_sketch(cudaStream_t stream, size_t count, const float* x, uint64_t seed,
                         int buckets, double* acc, float* out) {
  // Sums of doubles added in a scheduling-dependent order, rounded to float:
  // equal inputs give equal floats except when a sum lies within double
  // rounding of a float rounding boundary.
  if (buckets <= 0) return;
  TETHER_CUDA_CHECK(cudaMemsetAsync(acc, 0, sizeof(double) * size_t(buckets), stream));
  if (count > 0) {
    if (buckets <= kSharedBuckets) {
      unsigned blocks = std::min(grid_for(count), 1024u);
      sketch_shared_kernel<<<blocks, kThreads, sizeof(double) * size_t(buckets), stream>>>(
          count, x, seed, buckets, acc);
    } else {
      sketch_global_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, x, seed, buckets, acc);
    }
    check_launch();
  }
  double_to_float_kernel<<<grid_for(size_t(buckets)), kThreads, 0, stream>>>(size_t(buckets), acc,
                                                                             out);
  check_launch();
}

}  // namespace tether::gpu
