// The model zoo: mlp, lenet and resnet, written as layer declarations
// (models/layer_decl.h) and built by the same code as a model declared in the
// config (model.layers).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/layer_decl.h"
#include "models/model.h"

namespace tether {

struct ModelSpec {
  std::string name = "lenet";  // "mlp" | "lenet" | "resnet"
  int depth = 1;               // resnet: basic blocks per stage (3 stages)
  int width = 16;              // resnet: channels of the first stage (x2 per stage); mlp: hidden units = 32*width
  int hidden = 512;            // mlp hidden units
  float dropout = 0.0f;        // mlp/lenet: dropout before the last linear layer
};

// mlp:    flatten, linear in->hidden, relu, linear hidden->hidden, relu, linear hidden->classes
//         (hidden 512 on 28x28 = ../shared/peers/models.py MLP)
// lenet:  conv5x5(C->32, p2), relu, maxpool2, conv5x5(32->64, p2), relu, maxpool2,
//         flatten, linear(64*(H/4)*(W/4)->128), relu, linear(128->classes)
//         (on 1x28x28: exactly models.py `cnn`, 454,922 parameters)
// resnet: conv3x3(C->w) bn relu, 3 stages of `depth` basic blocks with widths
//         w, 2w, 4w (stride 2 entering stages 2 and 3, 1x1 conv+bn shortcut on
//         a shape change), global average pooling, linear(4w->classes).
//         Works for 28x28 and 32x32 inputs (ResNet-20 is depth 3, width 16).
// The declaration of a built-in model; throws std::invalid_argument for an
// unknown name.
std::vector<LayerDecl> zoo_layers(const ModelSpec& spec, int classes);
// make_declared_model(spec.name, zoo_layers(spec, classes), ...).
std::unique_ptr<Model> make_model(const ModelSpec& spec, Shape input, int classes);

}  // namespace tether
