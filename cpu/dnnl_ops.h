// oneDNN-backed dense math of the CPU backend: convolutions (direct JIT
// primitives in oneDNN's blocked layouts, reordered from and to the NCHW
// tensors of the interface) and row-major sgemm for the linear layers.
//
// Primitives are created once per shape and cached with their reorders and
// scratchpads; a call only binds the caller's pointers. oneDNN threads with
// OpenMP: every entry point sets the calling thread's OpenMP team size to
// `threads` for the duration of the call (ThreadScope), so the result depends
// only on the inputs and the thread count (oneDNN's CPU primitives partition
// work statically and reduce in a fixed order). Calls from several threads are
// serialised (the cached plans hold the bound buffers).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "models/backend.h"

namespace tether::cpu {

// Sets omp_set_num_threads(threads) for its lifetime, restoring the caller's.
class ThreadScope {
 public:
  explicit ThreadScope(int threads);
  ~ThreadScope();
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int saved_;
};

// C(m,n) = alpha * op(A) * op(B) + beta * C, row-major, ta/tb 'N' or 'T'.
// Throws std::runtime_error on a oneDNN error. k == 0 scales C by beta.
void sgemm(char ta, char tb, int m, int n, int k, float alpha, const float* a,
           int lda, const float* b, int ldb, float beta, float* c, int ldc);

class DnnlConv {
 public:
  explicit DnnlConv(int threads);
  ~DnnlConv();
  DnnlConv(const DnnlConv&) = delete;
  DnnlConv& operator=(const DnnlConv&) = delete;

  // y(n,k,oh,ow) = conv(x(n,c,h,w), w(k,c,r,s)) + b(k); b may be null.
  void forward(const ConvShape& sh, const float* x, const float* w,
               const float* b, float* y);
  // dx (may be null), dw, db (may be null).
  void backward(const ConvShape& sh, const float* x, const float* w,
                const float* dy, float* dx, float* dw, float* db);

  // Implementation names oneDNN picked for a shape ("jit:avx512_core" ...),
  // for benchmarks and logs: forward / backward-data / backward-weights.
  std::string impl_info(const ConvShape& sh);

 private:
  struct Forward;
  struct Backward;
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, bool, bool>;
  Forward& forward_plan(const ConvShape& sh, bool bias);
  Backward& backward_plan(const ConvShape& sh, bool want_dx, bool bias);

  int threads_;
  std::mutex mu_;  // guards the plans and their bound buffers
  struct Engine;
  std::unique_ptr<Engine> eng_;
  std::map<Key, std::unique_ptr<Forward>> fwd_;
  std::map<Key, std::unique_ptr<Backward>> bwd_;
};

}  // namespace tether::cpu
