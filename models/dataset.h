// In-memory image datasets kept as bytes, and the loaders that fill them.
//
// Every dataset is held as raw bytes (NCHW per image, one byte per pixel) plus
// int32 labels; normalisation to floats happens per batch on the device side
// with the dataset's `mean`/`std` ((x/255 - mean)/std, see
// kmath::normalize_byte). Loaders validate every header field and every label
// before trusting it, and never allocate more than the data actually present
// (a hostile header cannot trigger a huge allocation). Every failure is a
// DataError whose message starts with the file path and says what is wrong,
// e.g. "/data/t10k-labels-idx1-ubyte.gz: 9999 labels but 10000 images".
//
// Formats:
//   - IDX (MNIST, Fashion-MNIST): big-endian header `00 00 <type> <ndim>`,
//     ndim uint32 dimensions, then the data. Images must be unsigned bytes
//     (type 0x08) with 3 dimensions (count, rows, cols); labels unsigned bytes
//     with 1 dimension. Files may be gzip-compressed (read through zlib) or
//     plain; the compression is detected from the content, not the name.
//   - CIFAR-10 binary: data_batch_1..5.bin and test_batch.bin, records of one
//     label byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B: already CHW).
//   - synthetic: deterministic from a seed, learnable (class prototypes made of
//     a few bright blobs, shifted and noised per sample), integer arithmetic
//     only so every platform produces the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace tether {

// A data file is missing, unreadable or malformed. what() names the file.
class DataError : public std::runtime_error {
 public:
  DataError(const std::string& path, const std::string& problem)
      : std::runtime_error(path + ": " + problem), path_(path) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Dataset {
  std::string name;
  int channels = 0, height = 0, width = 0, classes = 0;
  std::vector<uint8_t> images;   // count * channels*height*width, NCHW per image
  std::vector<int32_t> labels;   // count, each in [0, classes)
  // Normalisation constants ((x/255 - mean)/std), one pair for all channels.
  float mean = 0.f, std = 1.f;

  size_t count() const { return labels.size(); }
  // Bytes of one image: channels*height*width.
  size_t image_bytes() const {
    return size_t(channels) * size_t(height) * size_t(width);
  }
};

struct DataSplits {
  Dataset train, test;
};

struct DatasetSpec {
  std::string name;  // "fashion-mnist", "mnist", "cifar10", "synthetic"
  std::string path;  // directory of the files; empty: the default below
  // Synthetic only: sample counts (0: kSyntheticDefaultTrain/Test).
  size_t synthetic_train = 0, synthetic_test = 0;
  uint64_t seed = 1;  // synthetic only
};

// Default directories when DatasetSpec::path is empty. Fashion-MNIST's is
// where Debian's dataset-fashion-mnist installs it; the others follow suit.
inline constexpr const char* kFashionMnistDefaultPath =
    "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kMnistDefaultPath = "/usr/share/datasets/mnist";
inline constexpr const char* kCifar10DefaultPath = "/usr/share/datasets/cifar10";
inline constexpr size_t kSyntheticDefaultTrain = 10000;
inline constexpr size_t kSyntheticDefaultTest = 2000;

// Per-dataset normalisation constants: mean and std of x/255 over the
// training images. CIFAR-10 uses one pair over all three channels (the
// per-channel values are 0.4914/0.4822/0.4465 and 0.2470/0.2435/0.2616).
inline constexpr float kFashionMnistMean = 0.2860f, kFashionMnistStd = 0.3530f;
inline constexpr float kMnistMean = 0.1307f, kMnistStd = 0.3081f;
inline constexpr float kCifar10Mean = 0.4734f, kCifar10Std = 0.2516f;

// Limits that reject absurd headers before anything is allocated.
inline constexpr uint32_t kMaxImageSide = 16384;        // rows, cols
inline constexpr size_t kMaxImageBytes = size_t(1) << 26;  // 64 MiB per image
inline constexpr size_t kMaxImageCount = 0xFFFFFFFFu;   // indices are uint32

// The directory load_dataset reads for `spec`: spec.path, or when empty the
// data set's default above; "" for synthetic (generated, no files). Throws
// DataError for an unknown name.
std::string dataset_dir(const DatasetSpec& spec);

// The image shape and number of classes of a data set by name, as
// load_dataset gives them with the standard files (an IDX file of other
// dimensions gives its own): what a declared model is checked against when
// the config is read. Throws DataError for an unknown name.
struct DatasetShape {
  int channels = 0, height = 0, width = 0, classes = 0;
};
DatasetShape dataset_shape(const std::string& name);

// Loads both splits of a dataset by name from dataset_dir(spec). Throws
// DataError (unknown name, or any problem of the files).
DataSplits load_dataset(const DatasetSpec& spec);

// One IDX image file and its label file (gzip or plain). `classes` bounds the
// labels. name is left empty and mean/std at 0/1: load_dataset fills them.
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 int classes = 10);

// MNIST-layout directory: train-images-idx3-ubyte(.gz), train-labels-idx1-
// ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz); the
// .gz file is preferred when both exist.
DataSplits load_mnist_dir(const std::string& dir);

// CIFAR-10 binary version: `dir` holds data_batch_1..5.bin and test_batch.bin
// directly or in a cifar-10-batches-bin/ subdirectory.
DataSplits load_cifar10(const std::string& dir);

// `count` synthetic samples. The class prototypes depend on `seed` only;
// the samples on (seed, stream), so train (stream 0) and test (stream 1)
// share the classes but not the samples.
Dataset make_synthetic(size_t count, uint64_t seed, uint64_t stream = 0,
                       int channels = 1, int height = 28, int width = 28,
                       int classes = 10);

// Copies the images and labels of samples indices[0..n) into the outputs
// (images_out holds n*image_bytes(), labels_out n). An index >= count()
// throws std::out_of_range.
void gather_batch(const Dataset& data, const uint32_t* indices, size_t n,
                  uint8_t* images_out, int32_t* labels_out);

}  // namespace tether
