#include "models/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "models/sampler.h"

namespace tether {
namespace {

namespace fs = std::filesystem;

std::string hex_byte(unsigned b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", b & 0xffu);
  return buf;
}

// A data file read through zlib: gzip content is inflated, anything else is
// read as is (zlib's transparent mode). Every failure is a DataError naming
// the path.
class InputFile {
 public:
  explicit InputFile(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    const fs::file_status st = fs::status(path_, ec);
    if (ec || !fs::exists(st)) {
      const std::string why = ec && ec != std::errc::no_such_file_or_directory
                                  ? ec.message()
                                  : "No such file or directory";
      throw DataError(path_, "cannot open: " + why);
    }
    if (!fs::is_regular_file(st)) throw DataError(path_, "cannot open: not a regular file");
    file_size_ = fs::file_size(path_, ec);
    if (ec) throw DataError(path_, "cannot open: " + ec.message());
    errno = 0;
    file_ = gzopen(path_.c_str(), "rb");
    if (file_ == nullptr) {
      const std::string why = errno != 0 ? std::strerror(errno) : "zlib could not open it";
      throw DataError(path_, "cannot open: " + why);
    }
    gzbuffer(file_, 1u << 16);  // 64 KiB in, 128 KiB inflated per read
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() {
    if (file_ != nullptr) gzclose_r(file_);
  }

  const std::string& path() const { return path_; }
  // Size on disk (compressed size for gzip files).
  uint64_t file_size() const { return file_size_; }
  // True once something was read and the content is gzip.
  bool compressed() const { return gzdirect(file_) == 0; }

  // Reads up to n bytes; fewer only at the end of the data. Throws on a read
  // error or corrupt gzip data. After a short read, truncated_stream() says
  // whether a gzip stream ended early.
  size_t read(void* dst, size_t n) {
    auto* p = static_cast<unsigned char*>(dst);
    size_t total = 0;
    while (total < n) {
      const unsigned want = unsigned(std::min<size_t>(n - total, size_t(1) << 30));
      const int got = gzread(file_, p + total, want);
      if (got < 0) {
        int errnum = 0;
        const char* msg = gzerror(file_, &errnum);
        if (errnum == Z_ERRNO)
          throw DataError(path_, std::string("read error: ") + std::strerror(errno));
        // zlib prefixes its message with the path: keep only the problem.
        std::string problem = msg != nullptr ? msg : "unknown zlib error";
        if (problem.rfind(path_ + ": ", 0) == 0) problem.erase(0, path_.size() + 2);
        throw DataError(path_, "corrupt gzip stream: " + problem);
      }
      if (got == 0) break;
      total += size_t(got);
    }
    return total;
  }

  bool truncated_stream() {
    int errnum = 0;
    gzerror(file_, &errnum);
    return errnum == Z_BUF_ERROR;
  }

  // " (gzip stream truncated)" after a short read of a truncated stream.
  std::string short_read_note() {
    return truncated_stream() ? " (gzip stream truncated)" : "";
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
  uint64_t file_size_ = 0;
};

uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// Reads an IDX header of unsigned bytes with `ndim` dimensions; returns them.
std::vector<uint32_t> read_idx_header(InputFile& f, int ndim, const char* shape) {
  unsigned char magic[4];
  const size_t got = f.read(magic, 4);
  if (got < 4)
    throw DataError(f.path(), "truncated header: " + std::to_string(got) +
                                  " bytes, an IDX header needs at least 4" +
                                  f.short_read_note());
  if (magic[0] != 0 || magic[1] != 0)
    throw DataError(f.path(), "bad magic " + hex_byte(magic[0]) + hex_byte(magic[1]).substr(2) +
                                  hex_byte(magic[2]).substr(2) + hex_byte(magic[3]).substr(2) +
                                  " (not an IDX file: it must start with two zero bytes)");
  if (magic[2] != 0x08)
    throw DataError(f.path(), "element type " + hex_byte(magic[2]) +
                                  " is not unsigned byte (0x08)");
  if (magic[3] != ndim)
    throw DataError(f.path(), "expected " + std::to_string(ndim) + " dimension" +
                                  (ndim == 1 ? "" : "s") + " " + shape + " but the header has " +
                                  std::to_string(magic[3]));
  unsigned char raw[4 * 4];
  const size_t need = size_t(4 * ndim);
  const size_t got_dims = f.read(raw, need);
  if (got_dims < need)
    throw DataError(f.path(), "truncated header: " + std::to_string(4 + got_dims) + " of " +
                                  std::to_string(4 + need) + " bytes" + f.short_read_note());
  std::vector<uint32_t> dims(static_cast<size_t>(ndim));
  for (int d = 0; d < ndim; ++d) dims[size_t(d)] = be32(raw + 4 * d);
  return dims;
}

// Reads exactly `bytes` bytes of body after a header of `header_bytes`, and
// checks that nothing follows. Allocates no more than the data present: a
// plain file's size is checked first; a gzip stream is read in chunks.
void read_body(InputFile& f, uint64_t header_bytes, uint64_t bytes, const std::string& what,
               std::vector<uint8_t>* out) {
  out->clear();
  // The first bytes tell zlib whether the content is gzip; the header is read.
  if (!f.compressed()) {
    const uint64_t present = f.file_size() - header_bytes;
    if (present < bytes)
      throw DataError(f.path(), "truncated: header says " + what + " (" + std::to_string(bytes) +
                                    " bytes) but only " + std::to_string(present) +
                                    " bytes follow the header");
    if (present > bytes)
      throw DataError(f.path(), std::to_string(present - bytes) +
                                    " bytes of trailing data after " + what);
    out->resize(size_t(bytes));
    const size_t got = f.read(out->data(), size_t(bytes));
    if (got < bytes)
      throw DataError(f.path(), "truncated: read " + std::to_string(got) + " of " +
                                    std::to_string(bytes) + " bytes of " + what);
  } else {
    constexpr size_t kFirstChunk = size_t(1) << 16, kChunk = size_t(1) << 24;
    // The header's size is not trusted: the buffer grows geometrically (each
    // read asks for as much as has arrived, 64 KiB first, 16 MiB at most) only
    // as inflated data arrives, so memory stays proportional to the data (a
    // tiny file claiming gigabytes costs 64 KiB, not 16 MiB).
    uint64_t total = 0;
    while (total < bytes) {
      const size_t step = std::clamp<size_t>(size_t(total), kFirstChunk, kChunk);
      const size_t want = size_t(std::min<uint64_t>(step, bytes - total));
      out->resize(size_t(total) + want);
      const size_t got = f.read(out->data() + total, want);
      total += got;
      if (got < want) {
        out->clear();
        out->shrink_to_fit();
        throw DataError(f.path(), "truncated: header says " + what + " (" +
                                      std::to_string(bytes) + " bytes) but the data ends after " +
                                      std::to_string(total) + f.short_read_note());
      }
    }
  }
  // Reading past the end makes zlib check the gzip trailer (CRC, length).
  unsigned char extra[256];
  const size_t trailing = f.read(extra, sizeof extra);
  if (trailing > 0)
    throw DataError(f.path(), "trailing data after " + what + " (at least " +
                                  std::to_string(trailing) + " more bytes)");
  if (f.truncated_stream())
    throw DataError(f.path(), "gzip stream truncated after " + what);
}

std::string pick_file(const std::string& dir, const std::string& base) {
  const fs::path gz = fs::path(dir) / (base + ".gz");
  const fs::path plain = fs::path(dir) / base;
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz.string();
  if (fs::exists(plain, ec)) return plain.string();
  throw DataError(gz.string(), "cannot open: No such file or directory (nor " +
                                   plain.string() + ")");
}

Dataset load_cifar_files(const std::vector<std::string>& paths) {
  constexpr size_t kPixels = 3 * 32 * 32;
  constexpr size_t kRecord = 1 + kPixels;
  constexpr size_t kRecordsPerRead = 32;  // ~96 KiB per read: zlib's own buffer is 128 KiB
  Dataset d;
  d.channels = 3;
  d.height = 32;
  d.width = 32;
  d.classes = 10;
  std::vector<uint8_t> buf(kRecord * kRecordsPerRead);
  for (const std::string& path : paths) {
    InputFile f(path);
    size_t records = 0;
    for (;;) {
      const size_t got = f.read(buf.data(), buf.size());
      const size_t whole = got / kRecord;
      for (size_t r = 0; r < whole; ++r) {
        const uint8_t* rec = buf.data() + r * kRecord;
        if (rec[0] >= d.classes)
          throw DataError(path, "label " + std::to_string(rec[0]) + " of record " +
                                    std::to_string(records + r) + " is out of range (" +
                                    std::to_string(d.classes) + " classes)");
        d.labels.push_back(int32_t(rec[0]));
        d.images.insert(d.images.end(), rec + 1, rec + kRecord);
      }
      records += whole;
      if (got < buf.size()) {
        const size_t total = records * kRecord + (got - whole * kRecord);
        if (total == 0) throw DataError(path, "empty file (no records)");
        if (got != whole * kRecord)
          throw DataError(path, "size " + std::to_string(total) +
                                    " bytes is not a multiple of the 3073-byte record "
                                    "(1 label + 3x32x32 pixels)" + f.short_read_note());
        if (f.truncated_stream()) throw DataError(path, "gzip stream truncated");
        break;
      }
    }
  }
  d.mean = kCifar10Mean;
  d.std = kCifar10Std;
  return d;
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int classes) {
  if (classes < 1 || classes > 256)
    throw std::invalid_argument("load_idx: classes must be in [1, 256], got " +
                                std::to_string(classes));
  Dataset d;
  d.channels = 1;
  d.classes = classes;
  uint64_t count = 0;
  {
    InputFile f(images_path);
    const std::vector<uint32_t> dims = read_idx_header(f, 3, "(count, rows, cols)");
    count = dims[0];
    const uint32_t rows = dims[1], cols = dims[2];
    if (count == 0) throw DataError(images_path, "zero images");
    if (rows == 0 || cols == 0 || rows > kMaxImageSide || cols > kMaxImageSide ||
        uint64_t(rows) * cols > kMaxImageBytes)
      throw DataError(images_path, "absurd image size " + std::to_string(rows) + "x" +
                                       std::to_string(cols) + " (each side must be 1.." +
                                       std::to_string(kMaxImageSide) + ", at most " +
                                       std::to_string(kMaxImageBytes) + " bytes per image)");
    d.height = int(rows);
    d.width = int(cols);
    const std::string what = std::to_string(count) + " images of " + std::to_string(rows) +
                             "x" + std::to_string(cols);
    read_body(f, 16, count * rows * cols, what, &d.images);
  }
  {
    InputFile f(labels_path);
    const std::vector<uint32_t> dims = read_idx_header(f, 1, "(count)");
    const uint64_t labels = dims[0];
    if (labels != count)
      throw DataError(labels_path, std::to_string(labels) + " labels but " +
                                       std::to_string(count) + " images");
    std::vector<uint8_t> raw;
    read_body(f, 8, labels, std::to_string(labels) + " labels", &raw);
    d.labels.resize(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] >= classes)
        throw DataError(labels_path, "label " + std::to_string(raw[i]) + " at index " +
                                         std::to_string(i) + " is out of range (" +
                                         std::to_string(classes) + " classes)");
      d.labels[i] = int32_t(raw[i]);
    }
  }
  return d;
}

DataSplits load_mnist_dir(const std::string& dir) {
  DataSplits s;
  s.train = load_idx(pick_file(dir, "train-images-idx3-ubyte"),
                     pick_file(dir, "train-labels-idx1-ubyte"));
  s.test = load_idx(pick_file(dir, "t10k-images-idx3-ubyte"),
                    pick_file(dir, "t10k-labels-idx1-ubyte"));
  if (s.train.height != s.test.height || s.train.width != s.test.width)
    throw DataError(dir, "train images are " + std::to_string(s.train.height) + "x" +
                             std::to_string(s.train.width) + " but test images are " +
                             std::to_string(s.test.height) + "x" + std::to_string(s.test.width));
  return s;
}

DataSplits load_cifar10(const std::string& dir) {
  fs::path root(dir);
  std::error_code ec;
  if (!fs::exists(root / "data_batch_1.bin", ec) &&
      fs::exists(root / "cifar-10-batches-bin" / "data_batch_1.bin", ec))
    root /= "cifar-10-batches-bin";
  std::vector<std::string> train;
  for (int i = 1; i <= 5; ++i)
    train.push_back((root / ("data_batch_" + std::to_string(i) + ".bin")).string());
  DataSplits s;
  s.train = load_cifar_files(train);
  s.test = load_cifar_files({(root / "test_batch.bin").string()});
  s.train.name = s.test.name = "cifar10";
  return s;
}

Dataset make_synthetic(size_t count, uint64_t seed, uint64_t stream, int channels,
                       int height, int width, int classes) {
  if (count == 0 || count > kMaxImageCount)
    throw std::invalid_argument("make_synthetic: count must be in [1, 2^32-1], got " +
                                std::to_string(count));
  if (channels < 1 || channels > 64 || height < 4 || width < 4 ||
      uint32_t(height) > kMaxImageSide || uint32_t(width) > kMaxImageSide)
    throw std::invalid_argument("make_synthetic: bad shape " + std::to_string(channels) + "x" +
                                std::to_string(height) + "x" + std::to_string(width));
  if (classes < 2 || classes > 256)
    throw std::invalid_argument("make_synthetic: classes must be in [2, 256], got " +
                                std::to_string(classes));
  Dataset d;
  d.name = "synthetic";
  d.channels = channels;
  d.height = height;
  d.width = width;
  d.classes = classes;

  // Class prototypes (from the seed alone): kBlobs blobs each, a blob being
  // a disc of radius r whose brightness falls off as (r² − d²)/r², with its
  // own intensity per channel.
  constexpr int kBlobs = 3;
  struct Blob {
    int cy, cx, r2;
    std::vector<int> intensity;  // per channel, 0..255
  };
  std::vector<std::vector<Blob>> protos(static_cast<size_t>(classes));
  Xoshiro256 prng(seed ^ 0x243f6a8885a308d3ull);
  const int min_side = std::min(height, width);
  for (auto& blobs : protos) {
    for (int b = 0; b < kBlobs; ++b) {
      Blob blob;
      blob.cy = height / 5 + int(prng.bounded(uint64_t(std::max(1, 3 * height / 5))));
      blob.cx = width / 5 + int(prng.bounded(uint64_t(std::max(1, 3 * width / 5))));
      const int r = 1 + min_side / 10 + int(prng.bounded(uint64_t(std::max(1, min_side / 6))));
      blob.r2 = r * r;
      for (int c = 0; c < channels; ++c) blob.intensity.push_back(96 + int(prng.bounded(160)));
      blobs.push_back(std::move(blob));
    }
  }

  // Samples (from seed and stream): a uniform label, a shift of up to
  // max_shift pixels, a brightness scale in [0.75, 1] and uniform noise of
  // ±kNoise on every pixel.
  constexpr int kNoise = 40;
  const int max_shift = std::max(1, min_side / 14);
  Xoshiro256 srng(seed ^ (0x9e3779b97f4a7c15ull * (stream + 1)));
  const size_t image_bytes = d.image_bytes();
  d.images.resize(count * image_bytes);
  d.labels.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const int label = int(srng.bounded(uint64_t(classes)));
    d.labels[i] = label;
    const int dy = int(srng.bounded(uint64_t(2 * max_shift + 1))) - max_shift;
    const int dx = int(srng.bounded(uint64_t(2 * max_shift + 1))) - max_shift;
    const int scale = 192 + int(srng.bounded(65));  // /256
    uint8_t* img = d.images.data() + i * image_bytes;
    for (int c = 0; c < channels; ++c) {
      for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
          int v = 0;
          for (const Blob& blob : protos[size_t(label)]) {
            const int ey = y - (blob.cy + dy), ex = x - (blob.cx + dx);
            const int e2 = ey * ey + ex * ex;
            if (e2 < blob.r2) v += blob.intensity[size_t(c)] * (blob.r2 - e2) / blob.r2;
          }
          v = v * scale / 256 + int(srng.bounded(2 * kNoise + 1)) - kNoise;
          img[(size_t(c) * size_t(height) + size_t(y)) * size_t(width) + size_t(x)] =
              uint8_t(std::clamp(v, 0, 255));
        }
      }
    }
  }
  // Normalisation constants of this sample set (integer sums: exact).
  uint64_t sum = 0, sum2 = 0;
  for (uint8_t b : d.images) {
    sum += b;
    sum2 += uint64_t(b) * b;
  }
  const double n = double(d.images.size());
  const double mean = double(sum) / n / 255.0;
  const double var = double(sum2) / n / (255.0 * 255.0) - mean * mean;
  d.mean = float(mean);
  d.std = float(std::sqrt(std::max(var, 1e-12)));
  return d;
}

std::string dataset_dir(const DatasetSpec& spec) {
  if (spec.name == "synthetic") return "";
  if (spec.name != "fashion-mnist" && spec.name != "mnist" && spec.name != "cifar10") {
    throw DataError("dataset '" + spec.name + "'",
                    "unknown dataset (expected fashion-mnist, mnist, cifar10 or synthetic)");
  }
  if (!spec.path.empty()) return spec.path;
  return spec.name == "fashion-mnist" ? kFashionMnistDefaultPath
         : spec.name == "mnist"       ? kMnistDefaultPath
                                      : kCifar10DefaultPath;
}

DatasetShape dataset_shape(const std::string& name) {
  if (name == "fashion-mnist" || name == "mnist") return {1, 28, 28, 10};
  if (name == "cifar10") return {3, 32, 32, 10};
  if (name == "synthetic") return {1, 28, 28, 10};   // make_synthetic's defaults, as load_dataset calls it
  throw DataError("dataset '" + name + "'", "unknown dataset (expected fashion-mnist, mnist, cifar10 or synthetic)");
}

DataSplits load_dataset(const DatasetSpec& spec) {
  if (spec.name == "fashion-mnist" || spec.name == "mnist") {
    const bool fashion = spec.name == "fashion-mnist";
    DataSplits s = load_mnist_dir(dataset_dir(spec));
    for (Dataset* d : {&s.train, &s.test}) {
      d->name = spec.name;
      d->mean = fashion ? kFashionMnistMean : kMnistMean;
      d->std = fashion ? kFashionMnistStd : kMnistStd;
    }
    return s;
  }
  if (spec.name == "cifar10") {
    return load_cifar10(dataset_dir(spec));
  }
  if (spec.name == "synthetic") {
    DataSplits s;
    s.train = make_synthetic(spec.synthetic_train ? spec.synthetic_train : kSyntheticDefaultTrain,
                             spec.seed, 0);
    s.test = make_synthetic(spec.synthetic_test ? spec.synthetic_test : kSyntheticDefaultTest,
                            spec.seed, 1);
    // Both splits normalise with the training set's constants.
    s.test.mean = s.train.mean;
    s.test.std = s.train.std;
    return s;
  }
  throw DataError("dataset '" + spec.name + "'",
                  "unknown dataset (expected fashion-mnist, mnist, cifar10 or synthetic)");
}

void gather_batch(const Dataset& data, const uint32_t* indices, size_t n, uint8_t* images_out,
                  int32_t* labels_out) {
  const size_t image_bytes = data.image_bytes();
  const size_t count = data.count();
  for (size_t k = 0; k < n; ++k) {
    const size_t i = indices[k];
    if (i >= count)
      throw std::out_of_range("gather_batch: index " + std::to_string(i) + " at position " +
                              std::to_string(k) + " outside [0, " + std::to_string(count) +
                              ") of dataset " + data.name);
    std::memcpy(images_out + k * image_bytes, data.images.data() + i * image_bytes, image_bytes);
    labels_out[k] = data.labels[i];
  }
}

}  // namespace tether
