#include "models/zoo.h"

#include <stdexcept>

namespace tether {

namespace {

std::vector<LayerDecl> mlp(const ModelSpec& spec, int classes) {
  std::vector<LayerDecl> net = {flatten_decl(), linear_decl(spec.hidden), relu_decl(), linear_decl(spec.hidden),
                                relu_decl()};
  if (spec.dropout > 0) net.push_back(dropout_decl(spec.dropout));
  net.push_back(linear_decl(classes));
  return net;
}

std::vector<LayerDecl> lenet(const ModelSpec& spec, int classes) {
  std::vector<LayerDecl> net = {conv2d_decl(32, 5, 1, 2), relu_decl(), maxpool2d_decl(2, 2),
                                conv2d_decl(64, 5, 1, 2), relu_decl(), maxpool2d_decl(2, 2),
                                flatten_decl(),           linear_decl(128), relu_decl()};
  if (spec.dropout > 0) net.push_back(dropout_decl(spec.dropout));
  net.push_back(linear_decl(classes));
  return net;
}

// conv (no bias) + batch-norm (+ relu)
void conv_bn(std::vector<LayerDecl>& net, int out, int kernel, int stride, int pad, bool relu) {
  net.push_back(conv2d_decl(out, kernel, stride, pad, false));
  net.push_back(batchnorm2d_decl());
  if (relu) net.push_back(relu_decl());
}

std::vector<LayerDecl> resnet(const ModelSpec& spec, int classes) {
  std::vector<LayerDecl> net;
  conv_bn(net, spec.width, 3, 1, 1, true);
  int in = spec.width;
  for (int stage = 0; stage < 3; ++stage) {
    int out = spec.width << stage;
    for (int b = 0; b < spec.depth; ++b) {
      int stride = (stage > 0 && b == 0) ? 2 : 1;
      std::vector<LayerDecl> body, shortcut;
      conv_bn(body, out, 3, stride, 1, true);
      conv_bn(body, out, 3, 1, 1, false);
      if (stride != 1 || in != out) conv_bn(shortcut, out, 1, stride, 0, false);
      net.push_back(residual_decl(std::move(body), std::move(shortcut)));
      net.push_back(relu_decl());
      in = out;
    }
  }
  net.push_back(global_avgpool_decl());
  net.push_back(flatten_decl());
  net.push_back(linear_decl(classes));
  return net;
}

}  // namespace

std::vector<LayerDecl> zoo_layers(const ModelSpec& spec, int classes) {
  if (spec.name == "mlp") return mlp(spec, classes);
  if (spec.name == "lenet") return lenet(spec, classes);
  if (spec.name == "resnet") {
    if (spec.depth < 1 || spec.width < 1) throw std::invalid_argument("resnet: depth and width must be >= 1");
    return resnet(spec, classes);
  }
  throw std::invalid_argument("model: unknown name \"" + spec.name + "\" (expected mlp, lenet or resnet)");
}

std::unique_ptr<Model> make_model(const ModelSpec& spec, Shape input, int classes) {
  return make_declared_model(spec.name, zoo_layers(spec, classes), input, classes, spec.name + ".layers");
}

}  // namespace tether
