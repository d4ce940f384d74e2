// Which library does the CPU backend's dense math: the ops of one lenet
// training step (batch 64; conv5x5 1->32 pad 2, relu, maxpool 2; conv5x5
// 32->64 pad 2, relu, maxpool 2; linear 3136->128, relu; linear 128->10;
// softmax cross-entropy; SGD momentum over 454,922 parameters) timed three
// ways that differ only in convolution and linear layers:
//
//   onednn           the CPU backend as built: oneDNN direct convolution
//                    primitives (blocked layouts, reorders included) + dnnl sgemm
//   im2col+openblas  im2col / col2im per image under OpenMP, OpenBLAS sgemm
//                    (one thread per image; the linear layers use all threads)
//   im2col+dnnl      the same im2col scheme with oneDNN's sgemm
//
// Every other op (relu, pooling, loss, SGD) is the backend's in all three.
// Per-op figures: the median over all timed steps, and the minimum (a floor
// that other load on a shared machine cannot raise).
// Correctness in the same run: the im2col variants' outputs and gradients are
// compared with the backend's. The peer is PyTorch's own training step
// (../shared/peers/bench_train.py, measured in the same run unless --no-peer).
//
// usage: cpu_math [--threads 2] [--batch 64] [--steps 30] [--runs 5]
//                 [--peer-script ../shared/peers/bench_train.py] [--no-peer]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/dnnl_ops.h"

namespace tether {
namespace {

using Clock = std::chrono::steady_clock;

// Row-major C = alpha op(A) op(B) + beta C.
using GemmFn = std::function<void(char, char, int, int, int, float, const float*, int,
                                  const float*, int, float, float*, int)>;

void openblas_gemm(char ta, char tb, int m, int n, int k, float alpha, const float* a,
                   int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta == 'N' ? CblasNoTrans : CblasTrans,
              tb == 'N' ? CblasNoTrans : CblasTrans, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc);
}

// col(c·r·s, oh·ow) of one image x(c,h,w).
void im2col(const ConvShape& sh, const float* x, float* col) {
  const int oh = sh.oh(), ow = sh.ow();
  for (int ci = 0; ci < sh.c; ++ci) {
    for (int ky = 0; ky < sh.r; ++ky) {
      for (int kx = 0; kx < sh.s; ++kx) {
        float* row = col + size_t((ci * sh.r + ky) * sh.s + kx) * oh * ow;
        for (int oy = 0; oy < oh; ++oy) {
          const int iy = oy * sh.stride - sh.pad + ky;
          float* out = row + size_t(oy) * ow;
          if (iy < 0 || iy >= sh.h) {
            std::memset(out, 0, sizeof(float) * ow);
            continue;
          }
          const float* in = x + (size_t(ci) * sh.h + iy) * sh.w;
          for (int ox = 0; ox < ow; ++ox) {
            const int ix = ox * sh.stride - sh.pad + kx;
            out[ox] = (ix >= 0 && ix < sh.w) ? in[ix] : 0.0f;
          }
        }
      }
    }
  }
}

// dx(c,h,w) = col2im(dcol), overwriting dx.
void col2im(const ConvShape& sh, const float* col, float* dx) {
  const int oh = sh.oh(), ow = sh.ow();
  std::memset(dx, 0, sizeof(float) * sh.c * sh.h * sh.w);
  for (int ci = 0; ci < sh.c; ++ci) {
    for (int ky = 0; ky < sh.r; ++ky) {
      for (int kx = 0; kx < sh.s; ++kx) {
        const float* row = col + size_t((ci * sh.r + ky) * sh.s + kx) * oh * ow;
        for (int oy = 0; oy < oh; ++oy) {
          const int iy = oy * sh.stride - sh.pad + ky;
          if (iy < 0 || iy >= sh.h) continue;
          float* out = dx + (size_t(ci) * sh.h + iy) * sh.w;
          for (int ox = 0; ox < ow; ++ox) {
            const int ix = ox * sh.stride - sh.pad + kx;
            if (ix >= 0 && ix < sh.w) out[ix] += row[size_t(oy) * ow + ox];
          }
        }
      }
    }
  }
}

// Convolution and linear layers by im2col + a given sgemm.
class Im2colMath {
 public:
  Im2colMath(int threads, GemmFn gemm, bool openblas)
      : nt_(threads), gemm_(std::move(gemm)), openblas_(openblas) {}

  void conv_forward(const ConvShape& sh, const float* x, const float* w, const float* b,
                    float* y) {
    const int crs = sh.c * sh.r * sh.s, ohw = sh.oh() * sh.ow();
    ensure(size_t(nt_) * crs * ohw);
    inner_threads(1);
#pragma omp parallel for schedule(static) num_threads(nt_)
    for (int i = 0; i < sh.n; ++i) {
      float* col = col_.data() + size_t(omp_get_thread_num()) * crs * ohw;
      im2col(sh, x + size_t(i) * sh.c * sh.h * sh.w, col);
      float* yi = y + size_t(i) * sh.k * ohw;
      for (int k = 0; k < sh.k; ++k) std::fill(yi + size_t(k) * ohw, yi + size_t(k + 1) * ohw, b[k]);
      // y_i(k, ohw) = w(k, crs) · col(crs, ohw) + y_i
      gemm_('N', 'N', sh.k, ohw, crs, 1.0f, w, crs, col, ohw, 1.0f, yi, ohw);
    }
    inner_threads(nt_);
  }

  void conv_backward(const ConvShape& sh, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db) {
    const int crs = sh.c * sh.r * sh.s, ohw = sh.oh() * sh.ow();
    ensure(size_t(nt_) * crs * ohw);
    part_dw_.assign(size_t(nt_) * sh.k * crs, 0.0f);
    part_db_.assign(size_t(nt_) * sh.k, 0.0f);
    inner_threads(1);
#pragma omp parallel num_threads(nt_)
    {
      const int t = omp_get_thread_num();
      float* col = col_.data() + size_t(t) * crs * ohw;
      float* pdw = part_dw_.data() + size_t(t) * sh.k * crs;
      float* pdb = part_db_.data() + size_t(t) * sh.k;
#pragma omp for schedule(static)
      for (int i = 0; i < sh.n; ++i) {
        const float* dyi = dy + size_t(i) * sh.k * ohw;
        im2col(sh, x + size_t(i) * sh.c * sh.h * sh.w, col);
        // dw += dy_i(k, ohw) · col(crs, ohw)^T
        gemm_('N', 'T', sh.k, crs, ohw, 1.0f, dyi, ohw, col, ohw, 1.0f, pdw, crs);
        for (int k = 0; k < sh.k; ++k) {
          float s = 0.0f;
          for (int j = 0; j < ohw; ++j) s += dyi[size_t(k) * ohw + j];
          pdb[k] += s;
        }
        if (dx != nullptr) {
          // dcol(crs, ohw) = w(k, crs)^T · dy_i(k, ohw)
          gemm_('T', 'N', crs, ohw, sh.k, 1.0f, w, crs, dyi, ohw, 0.0f, col, ohw);
          col2im(sh, col, dx + size_t(i) * sh.c * sh.h * sh.w);
        }
      }
    }
    inner_threads(nt_);
    // fixed-order sum of the per-thread partials
    for (size_t j = 0; j < size_t(sh.k) * crs; ++j) {
      float s = 0.0f;
      for (int t = 0; t < nt_; ++t) s += part_dw_[size_t(t) * sh.k * crs + j];
      dw[j] = s;
    }
    for (int k = 0; k < sh.k; ++k) {
      float s = 0.0f;
      for (int t = 0; t < nt_; ++t) s += part_db_[size_t(t) * sh.k + k];
      db[k] = s;
    }
  }

  void linear_forward(int n, int in, int out, const float* x, const float* w,
                      const float* b, float* y) {
    for (int i = 0; i < n; ++i) std::memcpy(y + size_t(i) * out, b, sizeof(float) * out);
    gemm_('N', 'T', n, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
  }
  void linear_backward(int n, int in, int out, const float* x, const float* w,
                       const float* dy, float* dx, float* dw, float* db) {
    if (dx != nullptr) gemm_('N', 'N', n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
    gemm_('T', 'N', out, in, n, 1.0f, dy, out, x, in, 0.0f, dw, in);
    for (int j = 0; j < out; ++j) {
      float s = 0.0f;
      for (int i = 0; i < n; ++i) s += dy[size_t(i) * out + j];
      db[j] = s;
    }
  }

 private:
  void ensure(size_t floats) {
    if (col_.size() < floats) col_.resize(floats);
  }
  // OpenBLAS (pthread build) keeps its own pool: one thread inside our
  // OpenMP regions, all threads for the linear layers. oneDNN's sgemm runs
  // single-threaded inside a parallel region by itself.
  void inner_threads(int t) {
    if (openblas_) openblas_set_num_threads(t);
  }

  int nt_;
  GemmFn gemm_;
  bool openblas_;
  std::vector<float> col_, part_dw_, part_db_;
};

// The lenet step's buffers and the op sequence, with per-op timing.
struct Lenet {
  static constexpr int kClasses = 10;
  int batch;
  ConvShape c1, c2;
  PoolShape p1, p2;
  int fc_in = 64 * 7 * 7, fc_hidden = 128;
  size_t params = 0;
  Backend* be;
  std::vector<float> arena, grad, mom;
  float *w1, *b1, *w2, *b2, *w3, *b3, *w4, *b4;
  float *dw1, *db1, *dw2, *db2, *dw3, *db3, *dw4, *db4;
  std::vector<float> x, a1, r1, q1, a2, r2, q2, h3, r3, logits;
  std::vector<float> dlogits, dr3, dh3, dq2, dr2, da2, dq1, dr1, da1;
  std::vector<int32_t> arg1, arg2, labels;
  float stats[2] = {0, 0};

  Lenet(Backend* backend, int n) : batch(n), be(backend) {
    c1 = ConvShape{n, 1, 28, 28, 32, 5, 5, 1, 2};
    p1 = PoolShape{n, 32, 28, 28, 2, 2, 0};
    c2 = ConvShape{n, 32, 14, 14, 64, 5, 5, 1, 2};
    p2 = PoolShape{n, 64, 14, 14, 2, 2, 0};
    const size_t sizes[8] = {c1.weight_count(), 32, c2.weight_count(), 64,
                             size_t(fc_hidden) * fc_in, size_t(fc_hidden),
                             size_t(kClasses) * fc_hidden, size_t(kClasses)};
    for (size_t s : sizes) params += s;
    arena.resize(params);
    grad.resize(params);
    mom.assign(params, 0.0f);
    std::mt19937 rng(1);
    float* slot[8];
    float* gslot[8];
    size_t off = 0;
    const float fan_in[8] = {25, 25, 800, 800, float(fc_in), float(fc_in), 128, 128};
    for (int i = 0; i < 8; ++i) {
      slot[i] = arena.data() + off;
      gslot[i] = grad.data() + off;
      std::uniform_real_distribution<float> u(-1.0f / std::sqrt(fan_in[i]),
                                              1.0f / std::sqrt(fan_in[i]));
      for (size_t j = 0; j < sizes[i]; ++j) slot[i][j] = u(rng);
      off += sizes[i];
    }
    w1 = slot[0], b1 = slot[1], w2 = slot[2], b2 = slot[3];
    w3 = slot[4], b3 = slot[5], w4 = slot[6], b4 = slot[7];
    dw1 = gslot[0], db1 = gslot[1], dw2 = gslot[2], db2 = gslot[3];
    dw3 = gslot[4], db3 = gslot[5], dw4 = gslot[6], db4 = gslot[7];
    std::normal_distribution<float> g(0.0f, 1.0f);
    x.resize(c1.in_count());
    for (float& v : x) v = g(rng);
    labels.resize(size_t(n));
    for (auto& l : labels) l = int32_t(rng() % kClasses);
    for (auto* v : {&a1, &r1, &da1, &dr1}) v->resize(c1.out_count());
    for (auto* v : {&q1, &dq1}) v->resize(p1.out_count());
    for (auto* v : {&a2, &r2, &da2, &dr2}) v->resize(c2.out_count());
    for (auto* v : {&q2, &dq2}) v->resize(p2.out_count());
    for (auto* v : {&h3, &r3, &dh3, &dr3}) v->resize(size_t(n) * fc_hidden);
    for (auto* v : {&logits, &dlogits}) v->resize(size_t(n) * kClasses);
    arg1.resize(p1.out_count());
    arg2.resize(p2.out_count());
  }
};

struct Ops {
  std::function<void(const ConvShape&, const float*, const float*, const float*, float*)> conv_fwd;
  std::function<void(const ConvShape&, const float*, const float*, const float*, float*,
                     float*, float*)> conv_bwd;
  std::function<void(int, int, int, const float*, const float*, const float*, float*)> lin_fwd;
  std::function<void(int, int, int, const float*, const float*, const float*, float*,
                     float*, float*)> lin_bwd;
};

using Times = std::map<std::string, std::vector<double>>;

// One training step; times[op] gets this step's milliseconds per op.
void step(Lenet& m, const Ops& ops, Times* times) {
  Backend& be = *m.be;
  std::map<std::string, double> t;
  auto timed = [&](const char* name, auto&& f) {
    const auto t0 = Clock::now();
    f();
    t[name] += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  const int n = m.batch;
  timed("conv1 fwd", [&] { ops.conv_fwd(m.c1, m.x.data(), m.w1, m.b1, m.a1.data()); });
  timed("relu fwd", [&] { be.relu_forward(m.a1.size(), m.a1.data(), m.r1.data()); });
  timed("pool fwd", [&] { be.pool_forward(PoolKind::kMax, m.p1, m.r1.data(), m.q1.data(), m.arg1.data()); });
  timed("conv2 fwd", [&] { ops.conv_fwd(m.c2, m.q1.data(), m.w2, m.b2, m.a2.data()); });
  timed("relu fwd", [&] { be.relu_forward(m.a2.size(), m.a2.data(), m.r2.data()); });
  timed("pool fwd", [&] { be.pool_forward(PoolKind::kMax, m.p2, m.r2.data(), m.q2.data(), m.arg2.data()); });
  timed("fc1 fwd", [&] { ops.lin_fwd(n, m.fc_in, m.fc_hidden, m.q2.data(), m.w3, m.b3, m.h3.data()); });
  timed("relu fwd", [&] { be.relu_forward(m.h3.size(), m.h3.data(), m.r3.data()); });
  timed("fc2 fwd", [&] { ops.lin_fwd(n, m.fc_hidden, Lenet::kClasses, m.r3.data(), m.w4, m.b4, m.logits.data()); });
  timed("softmax_xent", [&] { be.softmax_xent(n, Lenet::kClasses, m.logits.data(), m.labels.data(), m.dlogits.data(), m.stats); });
  timed("fc2 bwd", [&] { ops.lin_bwd(n, m.fc_hidden, Lenet::kClasses, m.r3.data(), m.w4, m.dlogits.data(), m.dr3.data(), m.dw4, m.db4); });
  timed("relu bwd", [&] { be.relu_backward(m.r3.size(), m.r3.data(), m.dr3.data(), m.dh3.data()); });
  timed("fc1 bwd", [&] { ops.lin_bwd(n, m.fc_in, m.fc_hidden, m.q2.data(), m.w3, m.dh3.data(), m.dq2.data(), m.dw3, m.db3); });
  timed("pool bwd", [&] { be.pool_backward(PoolKind::kMax, m.p2, m.dq2.data(), m.arg2.data(), m.dr2.data()); });
  timed("relu bwd", [&] { be.relu_backward(m.r2.size(), m.r2.data(), m.dr2.data(), m.da2.data()); });
  timed("conv2 bwd", [&] { ops.conv_bwd(m.c2, m.q1.data(), m.w2, m.da2.data(), m.dq1.data(), m.dw2, m.db2); });
  timed("pool bwd", [&] { be.pool_backward(PoolKind::kMax, m.p1, m.dq1.data(), m.arg1.data(), m.dr1.data()); });
  timed("relu bwd", [&] { be.relu_backward(m.r1.size(), m.r1.data(), m.dr1.data(), m.da1.data()); });
  timed("conv1 bwd", [&] { ops.conv_bwd(m.c1, m.x.data(), m.w1, m.da1.data(), nullptr, m.dw1, m.db1); });
  timed("sgd_step", [&] { be.sgd_step(m.params, 0.01f, 0.9f, 0.0f, false, m.grad.data(), m.mom.data(), m.arena.data()); });
  if (times != nullptr) {
    double total = 0.0;
    for (auto& [k, v] : t) (*times)[k].push_back(v), total += v;
    (*times)["total"].push_back(total);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Largest |a-b| relative to max|b| over one buffer.
double rel_err(const float* a, const float* b, size_t count) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < count; ++i) {
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    ref = std::max(ref, double(std::fabs(b[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

struct Variant {
  std::string name;
  Ops ops;
  Times times;
  double err = 0.0;  // against the backend after one step from equal state
};

double run_peer(const std::string& script, int threads, int batch) {
  std::ifstream probe(script);
  if (!probe) {
    std::printf("peer: %s not found, PyTorch not measured\n", script.c_str());
    return 0.0;
  }
  const std::string cmd = "/usr/bin/python3 " + script + " --model cnn --batch " +
                          std::to_string(batch) + " --threads " + std::to_string(threads) +
                          " --runs 3 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return 0.0;
  char line[1024];
  double img_s = 0.0;
  while (std::fgets(line, sizeof line, p) != nullptr) {
    std::printf("peer | %s", line);
    const char* med = std::strstr(line, "median=");
    if (std::strncmp(line, "RESULT", 6) == 0 && med != nullptr) img_s = std::atof(med + 7);
  }
  pclose(p);
  return img_s > 0 ? 1e3 * batch / img_s : 0.0;
}

int run(int argc, char** argv) {
  int threads = 2, batch = 64, steps = 30, runs = 5;
  bool peer = true;
  std::string script = "../shared/peers/bench_train.py";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument("missing value after " + a);
      return argv[++i];
    };
    if (a == "--threads") threads = std::stoi(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--runs") runs = std::stoi(next());
    else if (a == "--peer-script") script = next();
    else if (a == "--no-peer") peer = false;
    else throw std::invalid_argument("unknown argument " + a);
  }
  if (threads <= 0 || batch <= 0 || steps <= 0 || runs <= 0) {
    throw std::invalid_argument("--threads, --batch, --steps and --runs must be positive");
  }
  double load_at_start = 0.0;  // 1-minute load average before we add ours
  {
    std::ifstream loadavg("/proc/loadavg");
    loadavg >> load_at_start;
  }
  BackendOptions opts;
  opts.threads = threads;
  auto be = make_cpu_backend(opts);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  Im2colMath blas(threads, openblas_gemm, true);
  Im2colMath dgemm(threads, [threads](char ta, char tb, int m, int n, int k, float al,
                                      const float* a, int lda, const float* b, int ldb,
                                      float bt, float* c, int ldc) {
    cpu::ThreadScope scope(omp_in_parallel() ? 1 : threads);
    cpu::sgemm(ta, tb, m, n, k, al, a, lda, b, ldb, bt, c, ldc);
  }, false);
  auto im2col_ops = [](Im2colMath* mm) {
    Ops o;
    o.conv_fwd = [mm](auto&&... a) { mm->conv_forward(a...); };
    o.conv_bwd = [mm](auto&&... a) { mm->conv_backward(a...); };
    o.lin_fwd = [mm](auto&&... a) { mm->linear_forward(a...); };
    o.lin_bwd = [mm](auto&&... a) { mm->linear_backward(a...); };
    return o;
  };
  Backend* b = be.get();
  Ops native;
  native.conv_fwd = [b](auto&&... a) { b->conv2d_forward(a...); };
  native.conv_bwd = [b](auto&&... a) { b->conv2d_backward(a...); };
  native.lin_fwd = [b](auto&&... a) { b->linear_forward(a...); };
  native.lin_bwd = [b](auto&&... a) { b->linear_backward(a...); };
  std::vector<Variant> vs{{"onednn", native, {}, 0.0},
                          {"im2col+openblas", im2col_ops(&blas), {}, 0.0},
                          {"im2col+dnnl", im2col_ops(&dgemm), {}, 0.0}};

  cpu::DnnlConv probe(threads);
  std::printf("cpu_math: lenet step ops, batch %d, %d threads, %d x %d steps per variant\n",
              batch, threads, runs, steps);
  std::printf("oneDNN conv1: %s\noneDNN conv2: %s\nOpenBLAS: %s\n",
              probe.impl_info(Lenet(b, batch).c1).c_str(),
              probe.impl_info(Lenet(b, batch).c2).c_str(), openblas_get_config());

  // Correctness: one step from identical state, gradients compared.
  {
    Lenet ref(b, batch);
    step(ref, native, nullptr);
    for (size_t v = 1; v < vs.size(); ++v) {
      Lenet m(b, batch);
      step(m, vs[v].ops, nullptr);
      vs[v].err = std::max({rel_err(m.logits.data(), ref.logits.data(), m.logits.size()),
                            rel_err(m.dw1, ref.dw1, m.c1.weight_count()),
                            rel_err(m.dw2, ref.dw2, m.c2.weight_count()),
                            rel_err(m.dq1.data(), ref.dq1.data(), m.dq1.size()),
                            rel_err(m.dw3, ref.dw3, size_t(m.fc_in) * m.fc_hidden),
                            rel_err(m.arena.data(), ref.arena.data(), m.params)});
    }
  }
  // Timing: steps interleaved across variants so other load on the machine
  // hits all of them alike.
  std::vector<Lenet> nets;
  nets.reserve(vs.size());
  for (size_t v = 0; v < vs.size(); ++v) nets.emplace_back(b, batch);
  for (size_t v = 0; v < vs.size(); ++v) {
    for (int s = 0; s < 10; ++s) step(nets[v], vs[v].ops, nullptr);  // warm-up
  }
  for (int s = 0; s < runs * steps; ++s) {
    for (size_t v = 0; v < vs.size(); ++v) step(nets[v], vs[v].ops, &vs[v].times);
  }
  for (const char* stat : {"median", "min"}) {
    std::printf("\n%-14s", (std::string("op ms ") + stat).c_str());
    for (auto& v : vs) std::printf(" %16s", v.name.c_str());
    std::printf("\n");
    for (auto& [op, _] : vs[0].times) {
      std::printf("%-14s", op.c_str());
      for (auto& v : vs) {
        const auto& t = v.times[op];
        std::printf(" %16.3f", stat[1] == 'e' ? median(t) : *std::min_element(t.begin(), t.end()));
      }
      std::printf("\n");
    }
  }
  std::printf("%-14s", "max rel err");
  for (auto& v : vs) std::printf(" %16.2e", v.err);
  std::printf("\n");

  const double t_dnnl = median(vs[0].times["total"]);
  const double t_blas = median(vs[1].times["total"]);
  const double t_dgemm = median(vs[2].times["total"]);
  const double t_torch = peer ? run_peer(script, threads, batch) : 0.0;
  bool ok = vs[1].err < 1e-3 && vs[2].err < 1e-3;
  // Other load on the machine shows as medians far above the fastest steps.
  double spread = 0.0;
  for (auto& v : vs) {
    const auto& t = v.times["total"];
    spread = std::max(spread, median(t) / *std::min_element(t.begin(), t.end()));
  }
  const bool busy = spread > 1.3 || load_at_start > 1.0;
  const std::string load1 = std::to_string(load_at_start).substr(0, 4);
  if (busy) {
    std::printf("WARNING: the machine is busy (load %s, median/min step time %.2f): medians "
                "are unreliable, compare the min table\n", load1.c_str(), spread);
  }
  std::printf("RESULT cpu_math threads=%d batch=%d onednn_ms=%.2f im2col_openblas_ms=%.2f "
              "im2col_dnnl_ms=%.2f onednn_vs_openblas=%.2fx torch_ms=%.2f "
              "torch_over_onednn=%.2fx images_per_s=%.0f correct=%s busy=%s load=%s\n",
              threads, batch, t_dnnl, t_blas, t_dgemm, t_blas / t_dnnl, t_torch,
              t_torch > 0 ? t_torch / t_dnnl : 0.0, 1e3 * batch / t_dnnl, ok ? "yes" : "NO",
              busy ? "yes" : "no", load1.c_str());
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace tether

int main(int argc, char** argv) {
  try {
    return tether::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpu_math: %s\n", e.what());
    return 2;
  }
}
