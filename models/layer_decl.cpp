#include "models/layer_decl.h"

#include <algorithm>
#include <cstdio>

namespace tether {

namespace {

struct TypeName {
  LayerType type;
  const char* name;
};
constexpr TypeName kTypeNames[] = {
    {LayerType::kConv2d, "conv2d"},       {LayerType::kLinear, "linear"},
    {LayerType::kRelu, "relu"},           {LayerType::kMaxPool2d, "maxpool2d"},
    {LayerType::kAvgPool2d, "avgpool2d"}, {LayerType::kGlobalAvgPool, "global_avgpool"},
    {LayerType::kBatchNorm2d, "batchnorm2d"}, {LayerType::kDropout, "dropout"},
    {LayerType::kFlatten, "flatten"},     {LayerType::kResidual, "residual"},
};

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
std::string num(size_t v) { return std::to_string(v); }
std::string num(int v) { return std::to_string(v); }

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw ModelDeclError(where + ": " + what);
}

bool same(Shape a, Shape b) { return a.c == b.c && a.h == b.h && a.w == b.w; }

Shape append_list(Sequential& net, const std::vector<LayerDecl>& decls, Shape in, const std::string& path,
                  size_t& params);

// Checks one layer against its input shape, appends it to `net` and returns
// its output shape. `where` is the layer's path ("model.layers[3]").
Shape append_layer(Sequential& net, const LayerDecl& d, Shape in, const std::string& where, size_t& params) {
  const std::string input_is = " (the input of this layer is " + in.str() + ")";
  auto at_least = [&](const char* key, int value, int lo) {
    if (value < lo) fail(where + "." + key, "expected an integer >= " + num(lo) + ", got " + num(value));
  };
  // A square window of `kernel` with `padding` on both sides must fit.
  auto window_fits = [&](const char* what) {
    const int fit = std::min(in.h, in.w) + 2 * d.padding;
    if (d.kernel > fit) {
      fail(where + ".kernel", "expected at most " + num(fit) + " (" + what + " input " + in.str() + " with padding " +
                                  num(d.padding) + "), got " + num(d.kernel));
    }
  };
  Shape out;
  switch (d.type) {
    case LayerType::kConv2d: {
      at_least("out", d.out, 1);
      at_least("kernel", d.kernel, 1);
      at_least("stride", d.stride, 1);
      at_least("padding", d.padding, 0);
      if (d.in != 0 && d.in != in.c) {
        fail(where + ".in", "expected " + num(in.c) + " input channels, got " + num(d.in) + input_is);
      }
      window_fits("the");
      ConvShape sh;
      sh.c = in.c; sh.h = in.h; sh.w = in.w;
      sh.k = d.out; sh.r = d.kernel; sh.s = d.kernel; sh.stride = d.stride; sh.pad = d.padding;
      out = Shape{d.out, sh.oh(), sh.ow()};
      params += sh.weight_count() + (d.bias ? size_t(d.out) : 0);
      net.add(make_conv2d(d.out, d.kernel, d.stride, d.padding, d.bias));
      break;
    }
    case LayerType::kLinear: {
      at_least("out", d.out, 1);
      if (in.h != 1 || in.w != 1) {
        fail(where, "linear expects a flat input (F,1,1), got " + in.str() + "; add {\"type\": \"flatten\"} before it");
      }
      if (d.in != 0 && d.in != in.c) {
        fail(where + ".in", "expected " + num(in.c) + " inputs, got " + num(d.in) + input_is);
      }
      out = Shape{d.out, 1, 1};
      params += size_t(d.out) * size_t(in.c) + (d.bias ? size_t(d.out) : 0);
      net.add(make_linear(d.out, d.bias));
      break;
    }
    case LayerType::kRelu:
      out = in;
      net.add(make_relu());
      break;
    case LayerType::kMaxPool2d:
    case LayerType::kAvgPool2d: {
      at_least("kernel", d.kernel, 1);
      at_least("stride", d.stride, 1);
      at_least("padding", d.padding, 0);
      if (2 * d.padding > d.kernel) {
        fail(where + ".padding", "expected at most kernel/2 = " + num(d.kernel / 2) + ", got " + num(d.padding));
      }
      window_fits("the");
      PoolShape sh;
      sh.c = in.c; sh.h = in.h; sh.w = in.w;
      sh.kernel = d.kernel; sh.stride = d.stride; sh.pad = d.padding;
      out = Shape{in.c, sh.oh(), sh.ow()};
      net.add(d.type == LayerType::kMaxPool2d ? make_max_pool(d.kernel, d.stride, d.padding)
                                              : make_avg_pool(d.kernel, d.stride, d.padding));
      break;
    }
    case LayerType::kGlobalAvgPool:
      if (in.h != in.w) fail(where, "global_avgpool expects a square input (C,H,H), got " + in.str());
      out = Shape{in.c, 1, 1};
      net.add(make_global_avg_pool());
      break;
    case LayerType::kBatchNorm2d:
      if (!(d.momentum >= 0.0 && d.momentum <= 1.0)) {
        fail(where + ".momentum", "expected a number in [0, 1], got " + num(d.momentum));
      }
      if (!(d.eps > 0.0 && d.eps <= 1.0)) fail(where + ".eps", "expected a number in (0, 1], got " + num(d.eps));
      out = in;
      params += 4 * size_t(in.c);
      net.add(make_batch_norm(float(d.momentum), float(d.eps)));
      break;
    case LayerType::kDropout:
      if (!(d.p >= 0.0 && d.p < 1.0)) fail(where + ".p", "expected a number in [0, 1), got " + num(d.p));
      out = in;
      net.add(make_dropout(float(d.p)));
      break;
    case LayerType::kFlatten:
      out = Shape{int(in.count()), 1, 1};
      net.add(make_flatten());
      break;
    case LayerType::kResidual: {
      if (d.layers.empty()) fail(where + ".layers", "expected a non-empty array of layers (the body), got []");
      auto body = std::make_unique<Sequential>();
      auto shortcut = std::make_unique<Sequential>();
      const Shape a = append_list(*body, d.layers, in, where + ".layers", params);
      const Shape b = d.shortcut.empty() ? in : append_list(*shortcut, d.shortcut, in, where + ".shortcut", params);
      if (!same(a, b)) {
        fail(where, "the body (layers) gives " + a.str() + " but the shortcut " +
                        (d.shortcut.empty() ? std::string("(none: the identity) ") : std::string()) + "gives " +
                        b.str() + "; they are added, so they must agree");
      }
      out = a;
      net.add(make_residual(std::move(body), std::move(shortcut)));
      break;
    }
  }
  if (out.count() > kMaxActivationCount) {
    fail(where, "gives " + out.str() + " = " + num(out.count()) + " values per sample, more than 2^28");
  }
  return out;
}

Shape append_list(Sequential& net, const std::vector<LayerDecl>& decls, Shape in, const std::string& path,
                  size_t& params) {
  for (size_t i = 0; i < decls.size(); ++i) {
    in = append_layer(net, decls[i], in, path + "[" + std::to_string(i) + "]", params);
  }
  return in;
}

}  // namespace

const char* layer_type_name(LayerType type) {
  for (const auto& t : kTypeNames) {
    if (t.type == type) return t.name;
  }
  return "?";
}

const std::vector<LayerType>& all_layer_types() {
  static const std::vector<LayerType> types = [] {
    std::vector<LayerType> v;
    for (const auto& t : kTypeNames) v.push_back(t.type);
    return v;
  }();
  return types;
}

bool LayerDecl::operator==(const LayerDecl& o) const {
  return type == o.type && in == o.in && out == o.out && kernel == o.kernel && stride == o.stride &&
         padding == o.padding && bias == o.bias && p == o.p && momentum == o.momentum && eps == o.eps &&
         layers == o.layers && shortcut == o.shortcut;
}

LayerDecl conv2d_decl(int out, int kernel, int stride, int padding, bool bias) {
  LayerDecl d;
  d.type = LayerType::kConv2d;
  d.out = out; d.kernel = kernel; d.stride = stride; d.padding = padding; d.bias = bias;
  return d;
}
LayerDecl linear_decl(int out, bool bias) {
  LayerDecl d;
  d.type = LayerType::kLinear;
  d.out = out; d.bias = bias;
  return d;
}
LayerDecl relu_decl() {
  LayerDecl d;
  d.type = LayerType::kRelu;
  return d;
}
LayerDecl maxpool2d_decl(int kernel, int stride, int padding) {
  LayerDecl d;
  d.type = LayerType::kMaxPool2d;
  d.kernel = kernel; d.stride = stride; d.padding = padding;
  return d;
}
LayerDecl avgpool2d_decl(int kernel, int stride, int padding) {
  LayerDecl d = maxpool2d_decl(kernel, stride, padding);
  d.type = LayerType::kAvgPool2d;
  return d;
}
LayerDecl global_avgpool_decl() {
  LayerDecl d;
  d.type = LayerType::kGlobalAvgPool;
  return d;
}
LayerDecl batchnorm2d_decl(double momentum, double eps) {
  LayerDecl d;
  d.type = LayerType::kBatchNorm2d;
  d.momentum = momentum; d.eps = eps;
  return d;
}
LayerDecl dropout_decl(double p) {
  LayerDecl d;
  d.type = LayerType::kDropout;
  d.p = p;
  return d;
}
LayerDecl flatten_decl() {
  LayerDecl d;
  d.type = LayerType::kFlatten;
  return d;
}
LayerDecl residual_decl(std::vector<LayerDecl> body, std::vector<LayerDecl> shortcut) {
  LayerDecl d;
  d.type = LayerType::kResidual;
  d.layers = std::move(body);
  d.shortcut = std::move(shortcut);
  return d;
}

std::unique_ptr<Sequential> build_layers(const std::vector<LayerDecl>& decls, Shape input, int classes,
                                         const std::string& path) {
  if (decls.empty()) fail(path, "expected a non-empty array of layers, got []");
  auto net = std::make_unique<Sequential>();
  size_t params = 0;
  const Shape out = append_list(*net, decls, input, path, params);
  if (out.count() != size_t(classes)) {
    const LayerDecl& last = decls.back();
    const std::string where = path + "[" + std::to_string(decls.size() - 1) + "]";
    if (last.type == LayerType::kLinear) {
      fail(where + ".out", "expected " + num(classes) + " (the data set's classes: the last layer gives the logits), got " +
                               num(last.out));
    }
    fail(path, "the last layer (" + where + ") gives " + out.str() + " = " + num(out.count()) + " values, expected " +
                   num(classes) + " logits (the data set's classes); end with {\"type\": \"linear\", \"out\": " +
                   num(classes) + "}");
  }
  if (params > kMaxParamCount) {
    fail(path, "declares " + num(params) + " parameters, more than 2^31");
  }
  return net;
}

std::unique_ptr<Model> make_declared_model(const std::string& name, const std::vector<LayerDecl>& decls, Shape input,
                                           int classes, const std::string& path) {
  return std::make_unique<Model>(name, build_layers(decls, input, classes, path), input, classes);
}

}  // namespace tether
