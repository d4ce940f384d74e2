#include "models/zoo.h"

#include <stdexcept>

namespace tether {

namespace {

std::unique_ptr<Sequential> mlp(const ModelSpec& spec, int classes) {
  auto net = std::make_unique<Sequential>();
  net->add(make_flatten());
  net->add(make_linear(spec.hidden)).add(make_relu());
  net->add(make_linear(spec.hidden)).add(make_relu());
  if (spec.dropout > 0) net->add(make_dropout(spec.dropout));
  net->add(make_linear(classes));
  return net;
}

std::unique_ptr<Sequential> lenet(const ModelSpec& spec, int classes) {
  auto net = std::make_unique<Sequential>();
  net->add(make_conv2d(32, 5, 1, 2)).add(make_relu()).add(make_max_pool(2, 2));
  net->add(make_conv2d(64, 5, 1, 2)).add(make_relu()).add(make_max_pool(2, 2));
  net->add(make_flatten());
  net->add(make_linear(128)).add(make_relu());
  if (spec.dropout > 0) net->add(make_dropout(spec.dropout));
  net->add(make_linear(classes));
  return net;
}

std::unique_ptr<Sequential> conv_bn(int out, int kernel, int stride, int pad, bool relu) {
  auto s = std::make_unique<Sequential>();
  s->add(make_conv2d(out, kernel, stride, pad, false)).add(make_batch_norm());
  if (relu) s->add(make_relu());
  return s;
}

std::unique_ptr<Sequential> resnet(const ModelSpec& spec, int classes) {
  auto net = std::make_unique<Sequential>();
  net->add(conv_bn(spec.width, 3, 1, 1, true));
  int in = spec.width;
  for (int stage = 0; stage < 3; ++stage) {
    int out = spec.width << stage;
    for (int b = 0; b < spec.depth; ++b) {
      int stride = (stage > 0 && b == 0) ? 2 : 1;
      auto body = conv_bn(out, 3, stride, 1, true);
      body->add(make_conv2d(out, 3, 1, 1, false)).add(make_batch_norm());
      auto shortcut = std::make_unique<Sequential>();
      if (stride != 1 || in != out) {
        shortcut->add(make_conv2d(out, 1, stride, 0, false)).add(make_batch_norm());
      }
      net->add(make_residual(std::move(body), std::move(shortcut)));
      net->add(make_relu());
      in = out;
    }
  }
  net->add(make_global_avg_pool()).add(make_flatten()).add(make_linear(classes));
  return net;
}

}  // namespace

std::unique_ptr<Model> make_model(const ModelSpec& spec, Shape input, int classes) {
  if (spec.name == "mlp") return std::make_unique<Model>("mlp", mlp(spec, classes), input, classes);
  if (spec.name == "lenet") return std::make_unique<Model>("lenet", lenet(spec, classes), input, classes);
  if (spec.name == "resnet") {
    if (spec.depth < 1 || spec.width < 1) throw std::invalid_argument("resnet: depth and width must be >= 1");
    return std::make_unique<Model>("resnet", resnet(spec, classes), input, classes);
  }
  throw std::invalid_argument("model: unknown name \"" + spec.name + "\" (expected mlp, lenet or resnet)");
}

}  // namespace tether
