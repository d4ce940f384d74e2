// The CPU backend. Dense math (convolution, linear) goes to oneDNN
// (cpu/dnnl_ops.h); everything else is written here as OpenMP loops over the
// element math of models/kernel_math.h, so CUDA kernels compute the same
// per-element formulas.
//
// Determinism: every loop partitions work statically and writes disjoint
// outputs; every reduction (dot, count_sketch, batch-norm statistics, biases,
// loss) sums fixed blocks in a fixed order, most of them independent of the
// thread count. Same inputs and thread count give the same bits.
#include "cpu/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <thread>
#include <vector>

#include "cpu/cpu_check.h"
#include "cpu/dnnl_ops.h"
#include "models/kernel_math.h"

namespace tether {

namespace {

// Below this many elements an element-wise loop runs on the calling thread.
constexpr size_t kParallelMin = size_t(1) << 15;
// Block of the fixed-order reductions (dot, count_sketch).
constexpr size_t kReduceBlock = size_t(1) << 14;

void check_conv(const ConvShape& sh) {
  TETHER_CPU_ARG(sh.n >= 0 && sh.c > 0 && sh.h > 0 && sh.w > 0 && sh.k > 0 &&
                     sh.r > 0 && sh.s > 0 && sh.stride > 0 && sh.pad >= 0,
                 "conv2d: bad shape n=" << sh.n << " c=" << sh.c << " h=" << sh.h
                     << " w=" << sh.w << " k=" << sh.k << " r=" << sh.r << " s=" << sh.s
                     << " stride=" << sh.stride << " pad=" << sh.pad);
  TETHER_CPU_ARG(sh.oh() > 0 && sh.ow() > 0,
                 "conv2d: kernel " << sh.r << "x" << sh.s << " larger than padded input "
                     << sh.h + 2 * sh.pad << "x" << sh.w + 2 * sh.pad);
}

void check_pool(const PoolShape& sh) {
  TETHER_CPU_ARG(sh.n >= 0 && sh.c > 0 && sh.h > 0 && sh.w > 0 && sh.kernel > 0 &&
                     sh.stride > 0 && sh.pad >= 0,
                 "pool: bad shape n=" << sh.n << " c=" << sh.c << " h=" << sh.h << " w="
                     << sh.w << " kernel=" << sh.kernel << " stride=" << sh.stride
                     << " pad=" << sh.pad);
  TETHER_CPU_ARG(2 * sh.pad <= sh.kernel,
                 "pool: pad " << sh.pad << " exceeds half the kernel " << sh.kernel);
  TETHER_CPU_ARG(sh.oh() > 0 && sh.ow() > 0,
                 "pool: kernel " << sh.kernel << " larger than padded input "
                     << sh.h + 2 * sh.pad << "x" << sh.w + 2 * sh.pad);
  TETHER_CPU_ARG(sh.in_count() <= size_t(std::numeric_limits<int32_t>::max()),
                 "pool: input of " << sh.in_count() << " elements overflows int32 argmax");
}

// One output row of 2x2/stride-2 max pooling over input rows r0, r1 (width
// w); argmax = i0 + offset in the plane. Written as selects so the compiler
// vectorises it (random data makes branches mispredict half the time).
void max_pool_2x2_row(const float* __restrict r0, const float* __restrict r1, int ow,
                      int32_t i0, int w, float* __restrict y, int32_t* __restrict arg) {
  for (int ox = 0; ox < ow; ++ox) {
    const float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
    float best = a;
    int32_t k = 0;
    const bool tb = (b > best) | (b != b);  // PyTorch: v > max or v is NaN
    best = tb ? b : best;
    k = tb ? 1 : k;
    const bool tc = (c > best) | (c != c);
    best = tc ? c : best;
    k = tc ? w : k;
    const bool td = (d > best) | (d != d);
    best = td ? d : best;
    k = td ? w + 1 : k;
    y[ox] = best;
    arg[ox] = i0 + 2 * ox + k;
  }
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : nt_(threads), conv_(threads) {}

  std::string name() const override { return "cpu"; }
  bool is_device() const override { return false; }

  // ---- memory ---------------------------------------------------------------
  void* alloc_bytes(size_t bytes) override {
    size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, rounded);
    return p;
  }
  void free_bytes(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0 && dst != src) std::memmove(dst, src, bytes);
  }
  void synchronize() override {}

  // ---- input ----------------------------------------------------------------
  void normalize_bytes(size_t count, const uint8_t* bytes, float mean, float std,
                       float* dst) override {
    TETHER_CPU_ARG(std > 0.0f, "normalize_bytes: std " << std << " must be positive");
    const float inv_std = 1.0f / std;
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) dst[i] = kmath::normalize_byte(bytes[i], mean, inv_std);
  }

  // ---- dense layers ---------------------------------------------------------
  void linear_forward(int n, int in, int out, const float* x, const float* w,
                      const float* b, float* y) override {
    TETHER_CPU_ARG(n >= 0 && in > 0 && out > 0,
                   "linear_forward: n=" << n << " in=" << in << " out=" << out);
    cpu::ThreadScope threads(nt_);
    if (b != nullptr) {
      for (int i = 0; i < n; ++i) std::memcpy(y + size_t(i) * out, b, sizeof(float) * out);
    }
    // y(n,out) = x(n,in) · w(out,in)^T [+ y]
    cpu::sgemm('N', 'T', n, out, in, 1.0f, x, in, w, in, b != nullptr ? 1.0f : 0.0f, y, out);
  }

  void linear_backward(int n, int in, int out, const float* x, const float* w,
                       const float* dy, float* dx, float* dw, float* db) override {
    TETHER_CPU_ARG(n >= 0 && in > 0 && out > 0,
                   "linear_backward: n=" << n << " in=" << in << " out=" << out);
    cpu::ThreadScope threads(nt_);
    // dx(n,in) = dy(n,out) · w(out,in)
    if (dx != nullptr) cpu::sgemm('N', 'N', n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
    // dw(out,in) = dy(n,out)^T · x(n,in)
    cpu::sgemm('T', 'N', out, in, n, 1.0f, dy, out, x, in, 0.0f, dw, in);
    if (db != nullptr) {
      // db(out) = Σ_n dy(n,out): per column, rows in order.
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : size_t(n) * out >= kParallelMin)
      for (int j = 0; j < out; ++j) {
        double s = 0.0;
        for (int i = 0; i < n; ++i) s += dy[size_t(i) * out + j];
        db[j] = float(s);
      }
    }
  }

  void conv2d_forward(const ConvShape& sh, const float* x, const float* w,
                      const float* b, float* y) override {
    check_conv(sh);
    if (sh.n == 0) return;
    conv_.forward(sh, x, w, b, y);
  }

  void conv2d_backward(const ConvShape& sh, const float* x, const float* w,
                       const float* dy, float* dx, float* dw, float* db) override {
    check_conv(sh);
    if (sh.n == 0) {
      fill(sh.weight_count(), 0.0f, dw);
      if (db != nullptr) fill(size_t(sh.k), 0.0f, db);
      return;
    }
    conv_.backward(sh, x, w, dy, dx, dw, db);
  }

  // ---- element-wise and pooling ---------------------------------------------
  void relu_forward(size_t count, const float* x, float* y) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
  }

  void relu_backward(size_t count, const float* y, const float* dy, float* dx) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) {
      const float g = dy[i];  // loaded unconditionally: a select, not a branch
      dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
  }

  void pool_forward(PoolKind kind, const PoolShape& sh, const float* x, float* y,
                    int32_t* argmax) override {
    check_pool(sh);
    TETHER_CPU_ARG(kind != PoolKind::kMax || argmax != nullptr,
                   "pool_forward: max pooling needs an argmax buffer");
    const int oh = sh.oh(), ow = sh.ow(), planes = sh.n * sh.c;
    const size_t in_plane = size_t(sh.h) * sh.w, out_plane = size_t(oh) * ow;
    const float inv_area = 1.0f / float(sh.kernel * sh.kernel);
    const bool fast2 = kind == PoolKind::kMax && sh.kernel == 2 && sh.stride == 2 && sh.pad == 0;
    // One (n, c) plane per iteration: outputs of a plane read only its inputs.
    // Max keeps PyTorch's rule: take v when v > best or v is NaN, as selects.
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : sh.in_count() >= kParallelMin)
    for (int p = 0; p < planes; ++p) {
      const float* xp = x + size_t(p) * in_plane;
      float* yp = y + size_t(p) * out_plane;
      const int32_t base = int32_t(size_t(p) * in_plane);
      int32_t* ap = argmax != nullptr ? argmax + size_t(p) * out_plane : nullptr;
      if (fast2) {  // 2x2 windows, stride 2, no padding: the common case
        for (int oy = 0; oy < oh; ++oy) {
          const float* r0 = xp + size_t(2 * oy) * sh.w;
          max_pool_2x2_row(r0, r0 + sh.w, ow, base + 2 * oy * sh.w, sh.w, yp + oy * ow,
                           ap + oy * ow);
        }
        continue;
      }
      for (int oy = 0; oy < oh; ++oy) {
        const int y0 = oy * sh.stride - sh.pad;
        const int ya = std::max(y0, 0), yb = std::min(y0 + sh.kernel, sh.h);
        for (int ox = 0; ox < ow; ++ox) {
          const int x0 = ox * sh.stride - sh.pad;
          const int xa = std::max(x0, 0), xb = std::min(x0 + sh.kernel, sh.w);
          if (kind == PoolKind::kMax) {
            float best = -std::numeric_limits<float>::infinity();
            int32_t bi = base + ya * sh.w + xa;
            for (int iy = ya; iy < yb; ++iy) {
              for (int ix = xa; ix < xb; ++ix) {
                const float v = xp[iy * sh.w + ix];
                const bool take = (v > best) | (v != v);
                best = take ? v : best;
                bi = take ? base + iy * sh.w + ix : bi;
              }
            }
            yp[oy * ow + ox] = best;
            ap[oy * ow + ox] = bi;
          } else {
            float sum = 0.0f;
            for (int iy = ya; iy < yb; ++iy) {
              for (int ix = xa; ix < xb; ++ix) sum += xp[iy * sh.w + ix];
            }
            yp[oy * ow + ox] = sum * inv_area;
          }
        }
      }
    }
  }

  void pool_backward(PoolKind kind, const PoolShape& sh, const float* dy,
                     const int32_t* argmax, float* dx) override {
    check_pool(sh);
    TETHER_CPU_ARG(kind != PoolKind::kMax || argmax != nullptr,
                   "pool_backward: max pooling needs the forward's argmax");
    const int oh = sh.oh(), ow = sh.ow(), planes = sh.n * sh.c;
    const size_t in_plane = size_t(sh.h) * sh.w, out_plane = size_t(oh) * ow;
    const float inv_area = 1.0f / float(sh.kernel * sh.kernel);
    // Per plane, scattered in output order: deterministic, no write conflicts.
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : sh.in_count() >= kParallelMin)
    for (int p = 0; p < planes; ++p) {
      float* dxp = dx + size_t(p) * in_plane;
      const float* dyp = dy + size_t(p) * out_plane;
      std::memset(dxp, 0, sizeof(float) * in_plane);
      if (kind == PoolKind::kMax) {
        const int32_t* ap = argmax + size_t(p) * out_plane;
        for (size_t o = 0; o < out_plane; ++o) dx[size_t(ap[o])] += dyp[o];
        continue;
      }
      for (int oy = 0; oy < oh; ++oy) {
        const int y0 = oy * sh.stride - sh.pad;
        const int ya = std::max(y0, 0), yb = std::min(y0 + sh.kernel, sh.h);
        for (int ox = 0; ox < ow; ++ox) {
          const int x0 = ox * sh.stride - sh.pad;
          const int xa = std::max(x0, 0), xb = std::min(x0 + sh.kernel, sh.w);
          const float g = dyp[oy * ow + ox] * inv_area;
          for (int iy = ya; iy < yb; ++iy) {
            for (int ix = xa; ix < xb; ++ix) dxp[iy * sh.w + ix] += g;
          }
        }
      }
    }
  }

  // Batch statistics per channel in double, elements in (n, hw) order.
  void batchnorm_forward_train(const BatchNormShape& sh, const float* x,
                               const float* gamma, const float* beta, float momentum,
                               float eps, float* running_mean, float* running_var,
                               float* save_mean, float* save_invstd, float* y) override {
    check_bn(sh);
    const size_t m = size_t(sh.n) * sh.hw;
    TETHER_CPU_ARG(m > 1, "batchnorm_forward_train: needs more than one value per channel, got n="
                              << sh.n << " hw=" << sh.hw);
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : sh.count() >= kParallelMin)
    for (int ch = 0; ch < sh.c; ++ch) {
      double sum = 0.0;
      for (int i = 0; i < sh.n; ++i) {
        const float* xp = x + (size_t(i) * sh.c + ch) * sh.hw;
        for (int j = 0; j < sh.hw; ++j) sum += xp[j];
      }
      const double mean = sum / double(m);
      double sq = 0.0;
      for (int i = 0; i < sh.n; ++i) {
        const float* xp = x + (size_t(i) * sh.c + ch) * sh.hw;
        for (int j = 0; j < sh.hw; ++j) {
          const double d = xp[j] - mean;
          sq += d * d;
        }
      }
      const double var = sq / double(m);  // biased: normalisation
      const float invstd = float(1.0 / std::sqrt(var + double(eps)));
      const float fmean = float(mean);
      save_mean[ch] = fmean;
      save_invstd[ch] = invstd;
      running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * fmean;
      running_var[ch] = (1.0f - momentum) * running_var[ch] +
                        momentum * float(sq / double(m - 1));  // unbiased
      const float a = gamma[ch] * invstd, b = beta[ch] - fmean * a;
      for (int i = 0; i < sh.n; ++i) {
        const size_t off = (size_t(i) * sh.c + ch) * sh.hw;
        for (int j = 0; j < sh.hw; ++j) y[off + j] = x[off + j] * a + b;
      }
    }
  }

  void batchnorm_forward_eval(const BatchNormShape& sh, const float* x,
                              const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var,
                              float eps, float* y) override {
    check_bn(sh);
    const int rows = sh.n * sh.c;
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : sh.count() >= kParallelMin)
    for (int row = 0; row < rows; ++row) {
      const int ch = row % sh.c;
      const float invstd = 1.0f / std::sqrt(running_var[ch] + eps);
      const float a = gamma[ch] * invstd, b = beta[ch] - running_mean[ch] * a;
      const size_t off = size_t(row) * sh.hw;
      for (int j = 0; j < sh.hw; ++j) y[off + j] = x[off + j] * a + b;
    }
  }

  // dx = invstd/m · (m·dŷ − Σdŷ − x̂·Σ(dŷ·x̂)), dŷ = dy·γ ; dγ = Σ dy·x̂ ; dβ = Σ dy
  void batchnorm_backward(const BatchNormShape& sh, const float* x, const float* gamma,
                          const float* dy, const float* save_mean,
                          const float* save_invstd, float* dx, float* dgamma,
                          float* dbeta) override {
    check_bn(sh);
    const double m = double(size_t(sh.n) * sh.hw);
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : sh.count() >= kParallelMin)
    for (int ch = 0; ch < sh.c; ++ch) {
      const double mean = save_mean[ch], invstd = save_invstd[ch];
      double sum_dy = 0.0, sum_dy_xhat = 0.0;
      for (int i = 0; i < sh.n; ++i) {
        const size_t off = (size_t(i) * sh.c + ch) * sh.hw;
        for (int j = 0; j < sh.hw; ++j) {
          sum_dy += dy[off + j];
          sum_dy_xhat += double(dy[off + j]) * ((x[off + j] - mean) * invstd);
        }
      }
      dgamma[ch] = float(sum_dy_xhat);
      dbeta[ch] = float(sum_dy);
      if (dx == nullptr) continue;
      const double g = gamma[ch];
      const float k0 = float(g * invstd);
      const float k1 = float(g * invstd * sum_dy / m);
      const float k2 = float(g * invstd * sum_dy_xhat / m);
      const float fmean = float(mean), finv = float(invstd);
      for (int i = 0; i < sh.n; ++i) {
        const size_t off = (size_t(i) * sh.c + ch) * sh.hw;
        for (int j = 0; j < sh.hw; ++j) {
          const float xhat = (x[off + j] - fmean) * finv;
          dx[off + j] = k0 * dy[off + j] - k1 - k2 * xhat;
        }
      }
    }
  }

  void dropout_forward(size_t count, float p, uint64_t seed, const float* x,
                       float* mask, float* y) override {
    TETHER_CPU_ARG(p >= 0.0f && p < 1.0f, "dropout: p " << p << " outside [0, 1)");
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) {
      const float k = kmath::dropout_mask(seed, i, p);
      mask[i] = k;
      y[i] = x[i] * k;
    }
  }

  void softmax_xent(int n, int classes, const float* logits, const int32_t* labels,
                    float* dlogits, float* stats) override {
    TETHER_CPU_ARG(n >= 0 && classes > 0, "softmax_xent: n=" << n << " classes=" << classes);
    for (int i = 0; i < n; ++i) {
      TETHER_CPU_ARG(labels[i] >= 0 && labels[i] < classes,
                     "softmax_xent: label " << labels[i] << " of row " << i
                         << " outside [0, " << classes << ")");
    }
    std::vector<double> loss(static_cast<size_t>(n));
    std::vector<int> correct(static_cast<size_t>(n));
    const float inv_n = n > 0 ? 1.0f / float(n) : 0.0f;
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : size_t(n) * classes >= kParallelMin)
    for (int i = 0; i < n; ++i) {
      const float* z = logits + size_t(i) * classes;
      int best = 0;
      for (int j = 1; j < classes; ++j) best = z[j] > z[best] ? j : best;
      const float zmax = z[best];
      double sum = 0.0;
      for (int j = 0; j < classes; ++j) sum += std::exp(double(z[j] - zmax));
      const double lse = double(zmax) + std::log(sum);
      loss[size_t(i)] = lse - double(z[labels[i]]);
      correct[size_t(i)] = best == labels[i] ? 1 : 0;
      if (dlogits != nullptr) {
        float* g = dlogits + size_t(i) * classes;
        for (int j = 0; j < classes; ++j) {
          const float prob = float(std::exp(double(z[j]) - lse));
          g[j] = (prob - (j == labels[i] ? 1.0f : 0.0f)) * inv_n;
        }
      }
    }
    double total = 0.0;
    int hits = 0;
    for (int i = 0; i < n; ++i) total += loss[size_t(i)], hits += correct[size_t(i)];
    stats[0] += float(total);
    stats[1] += float(hits);
  }

  void argmax_rows(int n, int classes, const float* logits, int32_t* pred) override {
    TETHER_CPU_ARG(n >= 0 && classes > 0, "argmax_rows: n=" << n << " classes=" << classes);
    for (int i = 0; i < n; ++i) {
      const float* z = logits + size_t(i) * classes;
      int best = 0;
      for (int j = 1; j < classes; ++j) best = z[j] > z[best] ? j : best;
      pred[i] = best;
    }
  }

  // ---- vector algebra ---------------------------------------------------------
  void fill(size_t count, float value, float* x) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) x[i] = value;
  }
  void axpy(size_t count, float alpha, const float* x, float* y) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) y[i] += alpha * x[i];
  }
  void scale(size_t count, float alpha, float* x) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) x[i] *= alpha;
  }
  void add(size_t count, const float* a, const float* b, float* y) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) y[i] = a[i] + b[i];
  }
  void sub(size_t count, const float* a, const float* b, float* y) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) y[i] = a[i] - b[i];
  }

  // Blocks of kReduceBlock summed in double, blocks summed in order: the same
  // bits whatever the thread count.
  double dot(size_t count, const float* a, const float* b) override {
    const size_t blocks = (count + kReduceBlock - 1) / kReduceBlock;
    std::vector<double> part(blocks);
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t k = 0; k < blocks; ++k) {
      const size_t lo = k * kReduceBlock, hi = std::min(count, lo + kReduceBlock);
      double s = 0.0;
      for (size_t i = lo; i < hi; ++i) s += double(a[i]) * double(b[i]);
      part[k] = s;
    }
    double s = 0.0;
    for (double v : part) s += v;
    return s;
  }

  bool all_finite(size_t count, const float* x) override {
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) bad |= std::isfinite(x[i]) ? 0 : 1;
    return bad == 0;
  }

  void sgd_step(size_t count, float lr, float momentum, float weight_decay, bool nesterov,
                const float* g, float* m, float* w) override {
#pragma omp parallel for simd schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t i = 0; i < count; ++i) {
      kmath::sgd_element(lr, momentum, weight_decay, nesterov, g[i], m[i], w[i]);
    }
  }

  // Per block a private double histogram, blocks added in order.
  void count_sketch(size_t count, const float* x, uint64_t seed, int buckets,
                    float* out) override {
    TETHER_CPU_ARG(buckets > 0, "count_sketch: buckets " << buckets << " must be positive");
    const size_t block = std::max(kReduceBlock, size_t(16) * size_t(buckets));
    const size_t blocks = (count + block - 1) / block;
    std::vector<double> part(blocks * size_t(buckets), 0.0);
#pragma omp parallel for schedule(static) num_threads(nt_) if (parallel : count >= kParallelMin)
    for (size_t k = 0; k < blocks; ++k) {
      double* h = part.data() + k * size_t(buckets);
      const size_t lo = k * block, hi = std::min(count, lo + block);
      for (size_t i = lo; i < hi; ++i) {
        h[kmath::sketch_bucket(seed, i, uint32_t(buckets))] +=
            double(kmath::sketch_sign(seed, i)) * double(x[i]);
      }
    }
    for (int b = 0; b < buckets; ++b) {
      double s = 0.0;
      for (size_t k = 0; k < blocks; ++k) s += part[k * size_t(buckets) + size_t(b)];
      out[b] = float(s);
    }
  }

 private:
  static void check_bn(const BatchNormShape& sh) {
    TETHER_CPU_ARG(sh.n >= 0 && sh.c > 0 && sh.hw > 0,
                   "batchnorm: bad shape n=" << sh.n << " c=" << sh.c << " hw=" << sh.hw);
  }

  int nt_;             // OpenMP team size of every parallel loop
  cpu::DnnlConv conv_;  // cached oneDNN convolution primitives
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts) {
  TETHER_CPU_ARG(opts.threads >= 0, "threads " << opts.threads << " must be >= 0 (0 = every core)");
  int threads = opts.threads;
  if (threads == 0) threads = std::max(1, omp_get_num_procs());
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace tether
