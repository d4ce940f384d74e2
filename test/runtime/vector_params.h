// A ParamStore over a host vector: x_i for tests of the averaging algorithm
// without a model.
#pragma once

#include <cstring>
#include <vector>

#include "runtime/averaging.h"

namespace tether::testing {

class VectorParams : public tether::ParamStore {
 public:
  explicit VectorParams(std::vector<float> x) : x(std::move(x)) {}
  size_t count() const override { return x.size(); }
  void read(float* dst) override { std::memcpy(dst, x.data(), x.size() * sizeof(float)); }
  void write(const float* src) override { std::memcpy(x.data(), src, x.size() * sizeof(float)); }
  void add(const float* c) override {
    for (size_t i = 0; i < x.size(); ++i) x[i] += c[i];   // i over the vector
  }
  std::vector<float> x;
};

}  // namespace tether::testing
