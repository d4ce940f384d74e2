// Models declared as data: a list of layers, each a LayerDecl, from which
// build_layers makes the network. Both ways to choose a model go through it:
// `model.layers` in the JSON config (runtime/config.cpp reads it into
// LayerDecls) and the built-in models of models/zoo.cpp (which write their
// LayerDecls with the builders below). Shapes are inferred from the input
// (the data set's images); an error names the layer's path and the shapes
// that do not fit: "model.layers[7].in: expected 3136 inputs, got 1568 (the
// input of this layer is (3136,1,1))".
//
// Layer types and their fields (the JSON keys of the same name):
//   conv2d          out, kernel, stride (1), padding (0), bias (true), in
//   linear          out, bias (true), in         (input must be flat: (F,1,1))
//   relu, flatten   -
//   maxpool2d       kernel, stride (= kernel), padding (0, at most kernel/2)
//   avgpool2d       same as maxpool2d; padding counts as zeros
//   global_avgpool  -                            (square input, gives (C,1,1))
//   batchnorm2d     momentum (0.1), eps (1e-5)  (per channel; flat: per feature)
//   dropout         p (0.5)
//   residual        layers (the body), shortcut (empty: the identity);
//                   y = body(x) + shortcut(x), both must give the same shape
// `in` (0: unchecked) is checked against the inferred input: conv2d's input
// channels, linear's input features.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/layers.h"
#include "models/model.h"

namespace tether {

// A declaration does not fit its input, or a field is out of range; what()
// starts with the path of the offending layer or field.
class ModelDeclError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class LayerType {
  kConv2d, kLinear, kRelu, kMaxPool2d, kAvgPool2d, kGlobalAvgPool,
  kBatchNorm2d, kDropout, kFlatten, kResidual,
};

// "conv2d", "linear", ... (the JSON spelling).
const char* layer_type_name(LayerType type);
// Every type, in the order of the enum.
const std::vector<LayerType>& all_layer_types();

struct LayerDecl {
  LayerType type = LayerType::kRelu;
  int in = 0;            // conv2d: input channels, linear: input features; 0 = not checked
  int out = 0;           // conv2d: output channels, linear: output features
  int kernel = 0;        // conv2d, maxpool2d, avgpool2d: square window
  int stride = 1;        // conv2d, pools
  int padding = 0;       // conv2d, pools
  bool bias = true;      // conv2d, linear
  double p = 0.5;        // dropout
  double momentum = 0.1, eps = 1e-5;  // batchnorm2d
  std::vector<LayerDecl> layers;      // residual: the body
  std::vector<LayerDecl> shortcut;    // residual: empty = identity

  bool operator==(const LayerDecl& o) const;
  bool operator!=(const LayerDecl& o) const { return !(*this == o); }
};

// Builders (the zoo writes its models with these).
LayerDecl conv2d_decl(int out, int kernel, int stride = 1, int padding = 0, bool bias = true);
LayerDecl linear_decl(int out, bool bias = true);
LayerDecl relu_decl();
LayerDecl maxpool2d_decl(int kernel, int stride, int padding = 0);
LayerDecl avgpool2d_decl(int kernel, int stride, int padding = 0);
LayerDecl global_avgpool_decl();
LayerDecl batchnorm2d_decl(double momentum = 0.1, double eps = 1e-5);
LayerDecl dropout_decl(double p);
LayerDecl flatten_decl();
LayerDecl residual_decl(std::vector<LayerDecl> body, std::vector<LayerDecl> shortcut = {});

// Largest activation of one sample and largest model build_layers accepts.
inline constexpr size_t kMaxActivationCount = size_t(1) << 28;
inline constexpr size_t kMaxParamCount = size_t(1) << 31;

// Checks `decls` against an input of shape `input` and builds the network:
// every layer must fit the output of the one before, and the last must give
// `classes` values. `path` names the list in errors ("model.layers": its
// layers are "model.layers[0]", ..., a residual's "model.layers[4].layers[1]").
// Throws ModelDeclError.
std::unique_ptr<Sequential> build_layers(const std::vector<LayerDecl>& decls, Shape input, int classes,
                                         const std::string& path);

// build_layers wrapped in a Model called `name`.
std::unique_ptr<Model> make_declared_model(const std::string& name, const std::vector<LayerDecl>& decls, Shape input,
                                           int classes, const std::string& path);

}  // namespace tether
