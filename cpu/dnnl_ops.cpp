#include "cpu/dnnl_ops.h"

#include <omp.h>

#include <dnnl.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace tether::cpu {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;
using Dt = dnnl::memory::data_type;

ThreadScope::ThreadScope(int threads) : saved_(omp_get_max_threads()) {
  if (threads != saved_) omp_set_num_threads(threads);
}
ThreadScope::~ThreadScope() {
  if (omp_get_max_threads() != saved_) omp_set_num_threads(saved_);
}

void sgemm(char ta, char tb, int m, int n, int k, float alpha, const float* a,
           int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // op(A)·op(B) is the zero matrix: C = beta * C
    for (int i = 0; i < m; ++i) {
      float* row = c + size_t(i) * ldc;
      for (int j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
    return;
  }
  dnnl::status st = dnnl::sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl::status::success) {
    std::ostringstream os;
    os << "cpu backend: dnnl_sgemm(" << ta << tb << ", m=" << m << ", n=" << n
       << ", k=" << k << ") failed with status " << int(st);
    throw std::runtime_error(os.str());
  }
}

namespace {

std::string shape_str(const ConvShape& sh) {
  std::ostringstream os;
  os << "conv(n=" << sh.n << " c=" << sh.c << " h=" << sh.h << " w=" << sh.w
     << " k=" << sh.k << " r=" << sh.r << " s=" << sh.s << " stride=" << sh.stride
     << " pad=" << sh.pad << ")";
  return os.str();
}

// One tensor argument of a primitive: the caller's buffer in the interface's
// layout (`user`, its handle rebound each call) and the buffer in the layout
// the primitive wants (`inner`, the same object when the layouts agree).
struct Port {
  memory user, inner;
  dnnl::reorder to_inner, to_user;
  bool reorders = false;

  void init(const memory::desc& user_md, const memory::desc& prim_md,
            const dnnl::engine& eng, bool input) {
    user = memory(user_md, eng, DNNL_MEMORY_NONE);
    if (user_md == prim_md) {
      inner = user;
      return;
    }
    reorders = true;
    inner = memory(prim_md, eng);
    if (input) {
      to_inner = dnnl::reorder(user, inner);
    } else {
      to_user = dnnl::reorder(inner, user);
    }
  }
  // Binds the caller's buffer; for an input, reorders it into `inner`.
  const memory& bind_input(const float* p, dnnl::stream& strm) {
    user.set_data_handle(const_cast<float*>(p));
    if (reorders) to_inner.execute(strm, user, inner);
    return inner;
  }
  const memory& bind_output(float* p) {
    user.set_data_handle(p);
    return inner;
  }
  void finish_output(dnnl::stream& strm) {
    if (reorders) to_user.execute(strm, inner, user);
  }
};

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

struct Descs {
  memory::desc src_user, wei_user, dst_user, bias;
  memory::desc src_any, wei_any, dst_any;
  memory::dims strides, pad_l, pad_r;
  explicit Descs(const ConvShape& sh)
      : src_user({sh.n, sh.c, sh.h, sh.w}, Dt::f32, Tag::nchw),
        wei_user({sh.k, sh.c, sh.r, sh.s}, Dt::f32, Tag::oihw),
        dst_user({sh.n, sh.k, sh.oh(), sh.ow()}, Dt::f32, Tag::nchw),
        bias({sh.k}, Dt::f32, Tag::x),
        src_any({sh.n, sh.c, sh.h, sh.w}, Dt::f32, Tag::any),
        wei_any({sh.k, sh.c, sh.r, sh.s}, Dt::f32, Tag::any),
        dst_any({sh.n, sh.k, sh.oh(), sh.ow()}, Dt::f32, Tag::any),
        strides{sh.stride, sh.stride},
        pad_l{sh.pad, sh.pad},
        // oneDNN wants the right padding that makes (h + pl + pr - r)/stride + 1
        // exact; with floor division some trailing input rows may be unused.
        pad_r{int64_t(sh.oh() - 1) * sh.stride + sh.r - sh.h - sh.pad,
              int64_t(sh.ow() - 1) * sh.stride + sh.s - sh.w - sh.pad} {}
};

dnnl::convolution_forward::primitive_desc make_fwd_pd(const Descs& d, bool bias,
                                                      const dnnl::engine& eng) {
  using F = dnnl::convolution_forward;
  auto desc = bias ? F::desc(dnnl::prop_kind::forward_training,
                             dnnl::algorithm::convolution_direct, d.src_any,
                             d.wei_any, d.bias, d.dst_any, d.strides, d.pad_l, d.pad_r)
                   : F::desc(dnnl::prop_kind::forward_training,
                             dnnl::algorithm::convolution_direct, d.src_any,
                             d.wei_any, d.dst_any, d.strides, d.pad_l, d.pad_r);
  return F::primitive_desc(desc, user_scratchpad(), eng);
}

}  // namespace

struct DnnlConv::Engine {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
};

struct DnnlConv::Forward {
  dnnl::convolution_forward prim;
  std::string impl;
  Port src, wei, dst;
  memory bias, scratch;
};

struct DnnlConv::Backward {
  bool want_dx = false, has_bias = false, share_dy = false;
  std::string impl_data, impl_weights;
  // backward data: dx = conv_T(dy, w)
  dnnl::convolution_backward_data data;
  Port d_dy, d_w, d_dx;
  memory d_scratch;
  // backward weights: dw = corr(x, dy), db = Σ dy
  dnnl::convolution_backward_weights weights;
  Port w_x, w_dy, w_dw;
  memory w_db, w_scratch;
};

DnnlConv::DnnlConv(int threads) : threads_(threads), eng_(std::make_unique<Engine>()) {}
DnnlConv::~DnnlConv() = default;

DnnlConv::Forward& DnnlConv::forward_plan(const ConvShape& sh, bool bias) {
  Key key{sh.n, sh.c, sh.h, sh.w, sh.k, sh.r, sh.s, sh.stride, sh.pad, bias, false};
  auto it = fwd_.find(key);
  if (it != fwd_.end()) return *it->second;
  auto plan = std::make_unique<Forward>();
  try {
    Descs d(sh);
    auto pd = make_fwd_pd(d, bias, eng_->eng);
    plan->prim = dnnl::convolution_forward(pd);
    plan->impl = pd.impl_info_str();
    plan->src.init(d.src_user, pd.src_desc(), eng_->eng, true);
    plan->wei.init(d.wei_user, pd.weights_desc(), eng_->eng, true);
    plan->dst.init(d.dst_user, pd.dst_desc(), eng_->eng, false);
    if (bias) plan->bias = memory(d.bias, eng_->eng, DNNL_MEMORY_NONE);
    plan->scratch = memory(pd.scratchpad_desc(), eng_->eng);
  } catch (const dnnl::error& e) {
    throw std::runtime_error("cpu backend: oneDNN forward " + shape_str(sh) + ": " + e.what());
  }
  return *fwd_.emplace(key, std::move(plan)).first->second;
}

DnnlConv::Backward& DnnlConv::backward_plan(const ConvShape& sh, bool want_dx, bool bias) {
  Key key{sh.n, sh.c, sh.h, sh.w, sh.k, sh.r, sh.s, sh.stride, sh.pad, bias, want_dx};
  auto it = bwd_.find(key);
  if (it != bwd_.end()) return *it->second;
  auto plan = std::make_unique<Backward>();
  plan->want_dx = want_dx;
  plan->has_bias = bias;
  try {
    Descs d(sh);
    const dnnl::engine& eng = eng_->eng;
    auto hint = make_fwd_pd(d, bias, eng);
    if (want_dx) {
      using BD = dnnl::convolution_backward_data;
      BD::desc desc(dnnl::algorithm::convolution_direct, d.src_any, d.wei_any,
                    d.dst_any, d.strides, d.pad_l, d.pad_r);
      BD::primitive_desc pd(desc, user_scratchpad(), eng, hint);
      plan->data = BD(pd);
      plan->impl_data = pd.impl_info_str();
      plan->d_dy.init(d.dst_user, pd.diff_dst_desc(), eng, true);
      plan->d_w.init(d.wei_user, pd.weights_desc(), eng, true);
      plan->d_dx.init(d.src_user, pd.diff_src_desc(), eng, false);
      plan->d_scratch = memory(pd.scratchpad_desc(), eng);
    }
    using BW = dnnl::convolution_backward_weights;
    auto desc = bias ? BW::desc(dnnl::algorithm::convolution_direct, d.src_any,
                                d.wei_any, d.bias, d.dst_any, d.strides, d.pad_l, d.pad_r)
                     : BW::desc(dnnl::algorithm::convolution_direct, d.src_any,
                                d.wei_any, d.dst_any, d.strides, d.pad_l, d.pad_r);
    BW::primitive_desc pd(desc, user_scratchpad(), eng, hint);
    plan->weights = BW(pd);
    plan->impl_weights = pd.impl_info_str();
    plan->w_x.init(d.src_user, pd.src_desc(), eng, true);
    plan->w_dw.init(d.wei_user, pd.diff_weights_desc(), eng, false);
    if (bias) plan->w_db = memory(d.bias, eng, DNNL_MEMORY_NONE);
    plan->w_scratch = memory(pd.scratchpad_desc(), eng);
    // dy is reordered once when both primitives want it in the same layout.
    plan->share_dy = want_dx && plan->d_dy.reorders && pd.diff_dst_desc() == plan->d_dy.inner.get_desc();
    if (!plan->share_dy) plan->w_dy.init(d.dst_user, pd.diff_dst_desc(), eng, true);
  } catch (const dnnl::error& e) {
    throw std::runtime_error("cpu backend: oneDNN backward " + shape_str(sh) + ": " + e.what());
  }
  return *bwd_.emplace(key, std::move(plan)).first->second;
}

void DnnlConv::forward(const ConvShape& sh, const float* x, const float* w,
                       const float* b, float* y) {
  std::lock_guard<std::mutex> lock(mu_);
  ThreadScope threads(threads_);
  Forward& p = forward_plan(sh, b != nullptr);
  dnnl::stream& strm = eng_->strm;
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, p.src.bind_input(x, strm)},
      {DNNL_ARG_WEIGHTS, p.wei.bind_input(w, strm)},
      {DNNL_ARG_DST, p.dst.bind_output(y)},
      {DNNL_ARG_SCRATCHPAD, p.scratch}};
  if (b != nullptr) {
    p.bias.set_data_handle(const_cast<float*>(b));
    args.emplace(DNNL_ARG_BIAS, p.bias);
  }
  p.prim.execute(strm, args);
  p.dst.finish_output(strm);
  strm.wait();
}

void DnnlConv::backward(const ConvShape& sh, const float* x, const float* w,
                        const float* dy, float* dx, float* dw, float* db) {
  std::lock_guard<std::mutex> lock(mu_);
  ThreadScope threads(threads_);
  Backward& p = backward_plan(sh, dx != nullptr, db != nullptr);
  dnnl::stream& strm = eng_->strm;
  memory dy_inner;
  if (p.want_dx) {
    dy_inner = p.d_dy.bind_input(dy, strm);
    p.data.execute(strm, {{DNNL_ARG_DIFF_DST, dy_inner},
                          {DNNL_ARG_WEIGHTS, p.d_w.bind_input(w, strm)},
                          {DNNL_ARG_DIFF_SRC, p.d_dx.bind_output(dx)},
                          {DNNL_ARG_SCRATCHPAD, p.d_scratch}});
    p.d_dx.finish_output(strm);
  }
  if (!p.share_dy) dy_inner = p.w_dy.bind_input(dy, strm);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, p.w_x.bind_input(x, strm)},
      {DNNL_ARG_DIFF_DST, dy_inner},
      {DNNL_ARG_DIFF_WEIGHTS, p.w_dw.bind_output(dw)},
      {DNNL_ARG_SCRATCHPAD, p.w_scratch}};
  if (p.has_bias) {
    p.w_db.set_data_handle(db);
    args.emplace(DNNL_ARG_DIFF_BIAS, p.w_db);
  }
  p.weights.execute(strm, args);
  p.w_dw.finish_output(strm);
  strm.wait();
}

std::string DnnlConv::impl_info(const ConvShape& sh) {
  std::lock_guard<std::mutex> lock(mu_);
  ThreadScope threads(threads_);
  const Forward& f = forward_plan(sh, true);
  const Backward& b = backward_plan(sh, true, true);
  return "fwd " + f.impl + ", bwd_data " + b.impl_data + ", bwd_weights " + b.impl_weights;
}

}  // namespace tether::cpu
