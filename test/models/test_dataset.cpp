// Tests of models/dataset: the real Fashion-MNIST, plain vs gzip IDX, CIFAR-10
// and corrupt files generated into a temporary directory, synthetic data.
#include "models/dataset.h"

#include <doctest/doctest.h>
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using tether::DataError;
using tether::Dataset;
using tether::DatasetSpec;
using tether::DataSplits;

namespace {

using Bytes = std::vector<uint8_t>;

// A fresh directory under the system temp dir, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tether-data-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}

Bytes gzip_bytes(const Bytes& plain) {
  // gzip container via deflateInit2 (windowBits 15 + 16).
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&zs, uLong(plain.size())) + 64);
  zs.next_in = const_cast<Bytes::value_type*>(plain.data());
  zs.avail_in = uInt(plain.size());
  zs.next_out = out.data();
  zs.avail_out = uInt(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

Bytes gunzip_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  Bytes out;
  std::array<uint8_t, 1 << 16> buf;
  for (;;) {
    const int n = gzread(f, buf.data(), unsigned(buf.size()));
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  gzclose(f);
  return out;
}

void put_be32(Bytes* b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b->push_back(uint8_t(v >> s));
}

// IDX image file: count images of rows x cols, pixel (k, y, x) = (k*7 + y*3 + x) % 256.
Bytes idx_images(uint32_t count, uint32_t rows, uint32_t cols, size_t body_bytes = SIZE_MAX) {
  Bytes b = {0, 0, 0x08, 3};
  put_be32(&b, count);
  put_be32(&b, rows);
  put_be32(&b, cols);
  const size_t n = body_bytes != SIZE_MAX ? body_bytes : size_t(count) * rows * cols;
  for (size_t i = 0; i < n; ++i) {
    const size_t k = i / (size_t(rows) * cols), y = (i / cols) % rows, x = i % cols;
    b.push_back(uint8_t((k * 7 + y * 3 + x) % 256));
  }
  return b;
}

Bytes idx_labels(const std::vector<uint8_t>& labels) {
  Bytes b = {0, 0, 0x08, 1};
  put_be32(&b, uint32_t(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

std::vector<uint8_t> labels_mod10(size_t n) {
  std::vector<uint8_t> l(n);
  for (size_t i = 0; i < n; ++i) l[i] = uint8_t((i * 3) % 10);
  return l;
}

// Runs fn, which must throw a DataError naming `path` whose message contains
// `problem` (the message is "<path>: <problem...>").
void expect_data_error(const std::function<void()>& fn, const std::string& path,
                       const std::string& problem) {
  CAPTURE(path);
  CAPTURE(problem);
  try {
    fn();
    FAIL("no DataError thrown");
  } catch (const DataError& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(e.path() == path);
    CHECK(msg.rfind(path + ": ", 0) == 0);
    CHECK(msg.find(problem) != std::string::npos);
  }
}

uint64_t byte_sum(const Bytes& b) {
  uint64_t s = 0;
  for (uint8_t v : b) s += v;
  return s;
}

uint32_t crc_of(const Bytes& b) { return uint32_t(crc32(0L, b.data(), uInt(b.size()))); }

bool have_fashion_mnist() {
  return fs::exists(fs::path(tether::kFashionMnistDefaultPath) / "train-images-idx3-ubyte.gz");
}

const DataSplits& fashion_mnist() {
  static const DataSplits s = tether::load_dataset({"fashion-mnist", "", 0, 0, 1});
  return s;
}

}  // namespace

TEST_CASE("Fashion-MNIST from /usr/share/datasets loads with the known contents") {
  if (!have_fashion_mnist()) {
    MESSAGE("Debian's dataset-fashion-mnist is not installed: test not run");
    return;
  }
  const DataSplits& s = fashion_mnist();
  // Reference values computed independently with Python's gzip and zlib
  // modules over the same files (sum and CRC-32 of the pixel bytes).
  const Dataset& tr = s.train;
  CHECK(tr.name == "fashion-mnist");
  CHECK(tr.count() == 60000);
  CHECK(tr.channels == 1);
  CHECK(tr.height == 28);
  CHECK(tr.width == 28);
  CHECK(tr.classes == 10);
  CHECK(tr.image_bytes() == 784);
  REQUIRE(tr.images.size() == 60000u * 784u);
  CHECK(byte_sum(tr.images) == 3431114169ull);
  CHECK(crc_of(tr.images) == 2925911245u);
  CHECK(std::vector<int32_t>(tr.labels.begin(), tr.labels.begin() + 10) ==
        std::vector<int32_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5});
  std::array<int, 10> per_class{};
  for (int32_t l : tr.labels) {
    REQUIRE(l >= 0);
    REQUIRE(l < 10);
    ++per_class[size_t(l)];
  }
  for (int c : per_class) CHECK(c == 6000);
  CHECK(tr.mean == doctest::Approx(0.2860));
  CHECK(tr.std == doctest::Approx(0.3530));
  // The documented mean is the real one.
  CHECK(double(byte_sum(tr.images)) / double(tr.images.size()) / 255.0 ==
        doctest::Approx(0.2860).epsilon(1e-3));

  const Dataset& te = s.test;
  CHECK(te.count() == 10000);
  REQUIRE(te.images.size() == 10000u * 784u);
  CHECK(byte_sum(te.images) == 573469082ull);
  CHECK(crc_of(te.images) == 309494841u);
  CHECK(std::vector<int32_t>(te.labels.begin(), te.labels.begin() + 10) ==
        std::vector<int32_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
  CHECK(te.mean == tr.mean);
}

TEST_CASE("plain IDX files load identically to their gzip originals; .gz is preferred") {
  if (!have_fashion_mnist()) {
    MESSAGE("Debian's dataset-fashion-mnist is not installed: test not run");
    return;
  }
  TempDir dir;
  const fs::path src(tether::kFashionMnistDefaultPath);
  for (const char* base : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    write_file(dir.file(base), gunzip_file((src / (std::string(base) + ".gz")).string()));
  const DataSplits plain = tether::load_dataset({"fashion-mnist", dir.path().string(), 0, 0, 1});
  const DataSplits& gz = fashion_mnist();
  CHECK(plain.train.images == gz.train.images);
  CHECK(plain.train.labels == gz.train.labels);
  CHECK(plain.test.images == gz.test.images);
  CHECK(plain.test.labels == gz.test.labels);
  CHECK(plain.train.height == 28);

  // With both present the .gz is read: make the .gz differ from the plain file.
  TempDir both;
  const Bytes img_plain = idx_images(4, 2, 2), lab = idx_labels({1, 2, 3, 4});
  Bytes img_other = img_plain;
  img_other[16] = 200;
  write_file(both.file("t.img"), img_plain);
  write_file(both.file("t.img.gz"), gzip_bytes(img_other));
  write_file(both.file("t.lab"), lab);
  const Dataset d1 = tether::load_idx(both.file("t.img.gz"), both.file("t.lab"));
  const Dataset d2 = tether::load_idx(both.file("t.img"), both.file("t.lab"));
  CHECK(d1.images[0] == 200);
  CHECK(d2.images[0] == 0);
  for (const char* base : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    const bool images = std::string(base).find("images") != std::string::npos;
    write_file(both.file(base), images ? img_plain : lab);
    write_file(both.file(std::string(base) + ".gz"), gzip_bytes(images ? img_other : lab));
  }
  const DataSplits mixed = tether::load_dataset({"mnist", both.path().string(), 0, 0, 1});
  CHECK(mixed.train.images[0] == 200);
  CHECK(mixed.train.name == "mnist");
  CHECK(mixed.train.mean == doctest::Approx(0.1307));
  CHECK(mixed.test.std == doctest::Approx(0.3081));
}

TEST_CASE("small IDX files: layout, labels, gzip and plain") {
  TempDir dir;
  const Bytes img = idx_images(5, 3, 4);
  const auto labels = std::vector<uint8_t>{0, 9, 4, 4, 1};
  write_file(dir.file("i"), img);
  write_file(dir.file("l.gz"), gzip_bytes(idx_labels(labels)));
  const Dataset d = tether::load_idx(dir.file("i"), dir.file("l.gz"));
  CHECK(d.count() == 5);
  CHECK(d.channels == 1);
  CHECK(d.height == 3);
  CHECK(d.width == 4);
  CHECK(d.image_bytes() == 12);
  CHECK(d.labels == std::vector<int32_t>{0, 9, 4, 4, 1});
  for (size_t k = 0; k < 5; ++k)
    for (size_t y = 0; y < 3; ++y)
      for (size_t x = 0; x < 4; ++x)
        REQUIRE(d.images[k * 12 + y * 4 + x] == uint8_t((k * 7 + y * 3 + x) % 256));
  // classes bounds the labels.
  expect_data_error([&] { tether::load_idx(dir.file("i"), dir.file("l.gz"), 5); }, dir.file("l.gz"),
                    "label 9 at index 1 is out of range (5 classes)");
}

TEST_CASE("corrupt, truncated and mismatched IDX files are rejected with the file and the problem") {
  TempDir dir;
  const std::string good_img = dir.file("good-images"), good_lab = dir.file("good-labels");
  write_file(good_img, idx_images(5, 4, 4));
  write_file(good_lab, idx_labels(labels_mod10(5)));
  REQUIRE_NOTHROW(tether::load_idx(good_img, good_lab));
  auto images_error = [&](const std::string& name, const Bytes& content, const std::string& problem) {
    const std::string p = dir.file(name);
    write_file(p, content);
    expect_data_error([&] { tether::load_idx(p, good_lab); }, p, problem);
  };
  auto labels_error = [&](const std::string& img, const std::string& name, const Bytes& content,
                          const std::string& problem) {
    const std::string p = dir.file(name);
    write_file(p, content);
    expect_data_error([&] { tether::load_idx(img, p); }, p, problem);
  };

  SUBCASE("missing file") {
    expect_data_error([&] { tether::load_idx(dir.file("absent"), good_lab); }, dir.file("absent"),
                      "cannot open: No such file or directory");
    expect_data_error([&] { tether::load_idx(good_img, dir.file("absent-l")); },
                      dir.file("absent-l"), "cannot open: No such file or directory");
  }
  SUBCASE("a directory is not a readable data file") {
    fs::create_directory(dir.file("subdir"));
    expect_data_error([&] { tether::load_idx(dir.file("subdir"), good_lab); }, dir.file("subdir"),
                      "cannot open: not a regular file");
  }
  SUBCASE("empty file and truncated headers") {
    images_error("empty", {}, "truncated header: 0 bytes, an IDX header needs at least 4");
    images_error("tiny", {0, 0}, "truncated header: 2 bytes, an IDX header needs at least 4");
    Bytes h = idx_images(5, 4, 4);
    h.resize(10);
    images_error("short-header", h, "truncated header: 10 of 16 bytes");
    images_error("short-header.gz", gzip_bytes(h), "truncated header: 10 of 16 bytes");
  }
  SUBCASE("bad magic") {
    images_error("zip", {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                 "bad magic 0x504b0304 (not an IDX file");
  }
  SUBCASE("wrong element type") {
    Bytes b = idx_images(5, 4, 4);
    b[2] = 0x0D;  // float
    images_error("floats", b, "element type 0x0d is not unsigned byte (0x08)");
    Bytes l = idx_labels(labels_mod10(5));
    l[2] = 0x0C;  // int32
    labels_error(good_img, "int-labels", l, "element type 0x0c is not unsigned byte (0x08)");
  }
  SUBCASE("wrong number of dimensions") {
    Bytes b = idx_images(5, 4, 4);
    b[3] = 2;
    images_error("two-dims", b, "expected 3 dimensions (count, rows, cols) but the header has 2");
    Bytes l = idx_labels(labels_mod10(5));
    l[3] = 3;
    labels_error(good_img, "three-dim-labels", l, "expected 1 dimension (count) but the header has 3");
  }
  SUBCASE("zero images") {
    images_error("zero", idx_images(0, 28, 28), "zero images");
  }
  SUBCASE("absurd dimensions are refused before any allocation") {
    images_error("huge", idx_images(1, 100000, 100000, 0),
                 "absurd image size 100000x100000 (each side must be 1..16384");
    images_error("zero-rows", idx_images(3, 0, 28, 0), "absurd image size 0x28");
    images_error("too-many-pixels", idx_images(1, 16384, 16384, 0), "absurd image size 16384x16384");
  }
  SUBCASE("file shorter than its header says (plain)") {
    images_error("short-body", idx_images(5, 4, 4, 70),
                 "truncated: header says 5 images of 4x4 (80 bytes) but only 70 bytes follow the header");
    // A hostile count with a tiny file: rejected from the file size, nothing allocated.
    images_error("hostile-count", idx_images(0xFFFFFFFFu, 28, 28, 784),
                 "truncated: header says 4294967295 images of 28x28 (3367254359280 bytes) but only 784 "
                 "bytes follow the header");
  }
  SUBCASE("file shorter than its header says (gzip)") {
    images_error("short-body.gz", gzip_bytes(idx_images(5, 4, 4, 70)),
                 "truncated: header says 5 images of 4x4 (80 bytes) but the data ends after 70");
    images_error("hostile-count.gz", gzip_bytes(idx_images(0xFFFFFFFFu, 28, 28, 784)),
                 "truncated: header says 4294967295 images of 28x28 (3367254359280 bytes) but the data "
                 "ends after 784");
  }
  SUBCASE("gzip stream cut in the middle") {
    // Pixels from a hash so the stream does not compress to almost nothing.
    Bytes b = idx_images(100, 28, 28);
    uint32_t h = 1;
    for (size_t i = 16; i < b.size(); ++i) b[i] = uint8_t((h = h * 1664525u + 1013904223u) >> 24);
    Bytes gz = gzip_bytes(b);
    gz.resize(gz.size() / 2);
    images_error("cut.gz", gz, "truncated: header says 100 images of 28x28 (78400 bytes) but the data ends after ");
    images_error("cut.gz", gz, "(gzip stream truncated)");
  }
  SUBCASE("gzip stream missing its trailer") {
    Bytes gz = gzip_bytes(idx_images(5, 4, 4));
    gz.resize(gz.size() - 8);  // CRC-32 and length gone, all data present
    images_error("no-trailer.gz", gz, "gzip stream truncated after 5 images of 4x4");
  }
  SUBCASE("gzip checksum mismatch") {
    Bytes gz = gzip_bytes(idx_images(5, 4, 4));
    gz[gz.size() - 8] ^= 0xFF;  // first byte of the CRC-32
    images_error("bad-crc.gz", gz, "corrupt gzip stream: incorrect data check");
  }
  SUBCASE("gzip with garbage deflate data") {
    Bytes gz = gzip_bytes(idx_images(5, 4, 4));
    for (size_t i = 10; i < gz.size(); ++i) gz[i] = 0xFF;
    images_error("garbage.gz", gz, "corrupt gzip stream: ");
  }
  SUBCASE("trailing data after the images") {
    Bytes b = idx_images(5, 4, 4);
    b.insert(b.end(), {1, 2, 3});
    images_error("trailing", b, "3 bytes of trailing data after 5 images of 4x4");
    images_error("trailing.gz", gzip_bytes(b), "trailing data after 5 images of 4x4 (at least 3 more bytes)");
    Bytes l = idx_labels(labels_mod10(5));
    l.push_back(0);
    labels_error(good_img, "trailing-labels", l, "1 bytes of trailing data after 5 labels");
  }
  SUBCASE("labels truncated") {
    Bytes l = idx_labels(labels_mod10(5));
    l.resize(l.size() - 2);
    labels_error(good_img, "short-labels", l,
                 "truncated: header says 5 labels (5 bytes) but only 3 bytes follow the header");
  }
  SUBCASE("image and label counts differ") {
    const std::string img = dir.file("t10k-images-idx3-ubyte.gz");
    write_file(img, gzip_bytes(idx_images(10000, 2, 2)));
    const std::string lab = dir.file("t10k-labels-idx1-ubyte.gz");
    write_file(lab, gzip_bytes(idx_labels(labels_mod10(9999))));
    try {
      tether::load_idx(img, lab);
      FAIL("no DataError thrown");
    } catch (const DataError& e) {
      CHECK(std::string(e.what()) == lab + ": 9999 labels but 10000 images");
    }
  }
  SUBCASE("label value out of range") {
    auto l = labels_mod10(5);
    l[3] = 12;
    labels_error(good_img, "bad-label", idx_labels(l), "label 12 at index 3 is out of range (10 classes)");
  }
}

TEST_CASE("MNIST directory: a missing file names both candidates; unknown dataset name") {
  TempDir dir;
  write_file(dir.file("train-images-idx3-ubyte.gz"), gzip_bytes(idx_images(6, 28, 28)));
  write_file(dir.file("train-labels-idx1-ubyte"), idx_labels(labels_mod10(6)));
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_images(3, 28, 28));
  const std::string gz = (dir.path() / "t10k-labels-idx1-ubyte.gz").string();
  expect_data_error([&] { tether::load_dataset({"fashion-mnist", dir.path().string(), 0, 0, 1}); }, gz,
                    "cannot open: No such file or directory (nor " +
                        (dir.path() / "t10k-labels-idx1-ubyte").string() + ")");
  write_file(dir.file("t10k-labels-idx1-ubyte"), idx_labels(labels_mod10(3)));
  const DataSplits s = tether::load_dataset({"fashion-mnist", dir.path().string(), 0, 0, 1});
  CHECK(s.train.count() == 6);
  CHECK(s.test.count() == 3);

  // Train and test image sizes must agree.
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_images(3, 28, 27));
  expect_data_error([&] { tether::load_dataset({"mnist", dir.path().string(), 0, 0, 1}); },
                    dir.path().string(), "train images are 28x28 but test images are 28x27");

  expect_data_error([&] { tether::load_dataset({"imagenet", "", 0, 0, 1}); }, "dataset 'imagenet'",
                    "unknown dataset (expected fashion-mnist, mnist, cifar10 or synthetic)");
}

namespace {

// CIFAR-10 record k of file f: label (f*13 + k) % 10, pixel at (c, y, x) a
// function of all of them, so a misplaced byte is caught.
uint8_t cifar_pixel(size_t f, size_t k, size_t c, size_t y, size_t x) {
  return uint8_t((f * 31 + k * 17 + c * 101 + y * 5 + x) % 256);
}
Bytes cifar_file(size_t f, size_t records) {
  Bytes b;
  for (size_t k = 0; k < records; ++k) {
    b.push_back(uint8_t((f * 13 + k) % 10));
    for (size_t c = 0; c < 3; ++c)
      for (size_t y = 0; y < 32; ++y)
        for (size_t x = 0; x < 32; ++x) b.push_back(cifar_pixel(f, k, c, y, x));
  }
  return b;
}
const char* const kCifarFiles[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                    "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
// Records per fixture file: 1..5 for the training batches, 4 for the test batch.
size_t cifar_records(size_t f) { return f < 5 ? f + 1 : 4; }

void write_cifar(const fs::path& root) {
  fs::create_directories(root);
  for (size_t f = 0; f < 6; ++f)
    write_file((root / kCifarFiles[f]).string(), cifar_file(f, cifar_records(f)));
}

}  // namespace

TEST_CASE("CIFAR-10 binary batches: records in order, CHW pixels, labels") {
  TempDir dir;
  write_cifar(dir.path());
  auto check = [](const DataSplits& s) {
    CHECK(s.train.name == "cifar10");
    CHECK(s.train.channels == 3);
    CHECK(s.train.height == 32);
    CHECK(s.train.width == 32);
    CHECK(s.train.classes == 10);
    CHECK(s.train.image_bytes() == 3072);
    REQUIRE(s.train.count() == 1 + 2 + 3 + 4 + 5);
    REQUIRE(s.test.count() == 4);
    CHECK(s.train.mean == doctest::Approx(0.4734));
    CHECK(s.test.std == doctest::Approx(0.2516));
    size_t i = 0;
    for (size_t f = 0; f < 6; ++f) {
      const Dataset& d = f < 5 ? s.train : s.test;
      if (f == 5) i = 0;
      for (size_t k = 0; k < cifar_records(f); ++k, ++i) {
        REQUIRE(d.labels[i] == int32_t((f * 13 + k) % 10));
        for (size_t c = 0; c < 3; ++c)
          for (size_t y = 0; y < 32; y += 7)
            for (size_t x = 0; x < 32; x += 5)
              REQUIRE(d.images[i * 3072 + c * 1024 + y * 32 + x] == cifar_pixel(f, k, c, y, x));
      }
    }
  };
  check(tether::load_dataset({"cifar10", dir.path().string(), 0, 0, 1}));
  // The layout of the official archive: files in cifar-10-batches-bin/.
  TempDir nested;
  write_cifar(nested.path() / "cifar-10-batches-bin");
  check(tether::load_cifar10(nested.path().string()));
}

TEST_CASE("corrupt CIFAR-10 files are rejected with the file and the problem") {
  TempDir dir;
  write_cifar(dir.path());
  const std::string b3 = dir.file("data_batch_3.bin");
  const std::string root = dir.path().string();
  SUBCASE("missing batch") {
    fs::remove(b3);
    expect_data_error([&] { tether::load_cifar10(root); }, b3, "cannot open: No such file or directory");
  }
  SUBCASE("size not a multiple of the record") {
    Bytes b = cifar_file(2, 3);
    b.push_back(7);
    write_file(b3, b);
    expect_data_error([&] { tether::load_cifar10(root); }, b3,
                      "size 9220 bytes is not a multiple of the 3073-byte record (1 label + 3x32x32 pixels)");
    b.resize(3073 - 5);
    write_file(b3, b);
    expect_data_error([&] { tether::load_cifar10(root); }, b3,
                      "size 3068 bytes is not a multiple of the 3073-byte record");
  }
  SUBCASE("empty file") {
    write_file(b3, {});
    expect_data_error([&] { tether::load_cifar10(root); }, b3, "empty file (no records)");
  }
  SUBCASE("label out of range") {
    Bytes b = cifar_file(2, 3);
    b[2 * 3073] = 10;
    write_file(b3, b);
    expect_data_error([&] { tether::load_cifar10(root); }, b3,
                      "label 10 of record 2 is out of range (10 classes)");
  }
  SUBCASE("test batch missing") {
    const std::string t = dir.file("test_batch.bin");
    fs::remove(t);
    expect_data_error([&] { tether::load_dataset({"cifar10", root, 0, 0, 1}); }, t,
                      "cannot open: No such file or directory");
  }
}

TEST_CASE("synthetic data: deterministic, shaped, balanced enough, learnable") {
  const DataSplits a = tether::load_dataset({"synthetic", "", 2000, 500, 42});
  const DataSplits b = tether::load_dataset({"synthetic", "", 2000, 500, 42});
  const DataSplits c = tether::load_dataset({"synthetic", "", 2000, 500, 43});
  CHECK(a.train.name == "synthetic");
  CHECK(a.train.count() == 2000);
  CHECK(a.test.count() == 500);
  CHECK(a.train.channels == 1);
  CHECK(a.train.height == 28);
  CHECK(a.train.width == 28);
  CHECK(a.train.classes == 10);
  CHECK(a.train.images.size() == 2000u * 784u);
  CHECK(a.train.images == b.train.images);
  CHECK(a.train.labels == b.train.labels);
  CHECK(a.test.images == b.test.images);
  CHECK(a.train.images != c.train.images);
  CHECK(a.test.images != Bytes(a.train.images.begin(), a.train.images.begin() + 500 * 784));
  CHECK(a.train.mean == b.train.mean);
  CHECK(a.test.mean == a.train.mean);
  CHECK(a.train.mean > 0.0f);
  CHECK(a.train.mean < 1.0f);
  CHECK(a.train.std > 0.05f);

  // Mean and std are those of the training bytes.
  double s = 0, s2 = 0;
  for (uint8_t v : a.train.images) {
    s += v / 255.0;
    s2 += (v / 255.0) * (v / 255.0);
  }
  const double n = double(a.train.images.size());
  CHECK(a.train.mean == doctest::Approx(s / n).epsilon(1e-5));
  CHECK(a.train.std == doctest::Approx(std::sqrt(s2 / n - (s / n) * (s / n))).epsilon(1e-4));

  std::array<int, 10> per_class{};
  for (int32_t l : a.train.labels) {
    REQUIRE(l >= 0);
    REQUIRE(l < 10);
    ++per_class[size_t(l)];
  }
  for (int k : per_class) CHECK(k > 100);

  // Learnable: a nearest-class-mean classifier fit on train is accurate on test.
  std::vector<double> means(10 * 784, 0.0);
  for (size_t i = 0; i < a.train.count(); ++i)
    for (size_t p = 0; p < 784; ++p)
      means[size_t(a.train.labels[i]) * 784 + p] += a.train.images[i * 784 + p];
  for (size_t k = 0; k < 10; ++k)
    for (size_t p = 0; p < 784; ++p) means[k * 784 + p] /= per_class[k];
  size_t correct = 0;
  for (size_t i = 0; i < a.test.count(); ++i) {
    double best = 1e300;
    int best_k = -1;
    for (int k = 0; k < 10; ++k) {
      double d = 0;
      for (size_t p = 0; p < 784; ++p) {
        const double e = a.test.images[i * 784 + p] - means[size_t(k) * 784 + p];
        d += e * e;
      }
      if (d < best) best = d, best_k = k;
    }
    correct += best_k == a.test.labels[i];
  }
  CHECK(double(correct) / double(a.test.count()) > 0.9);
  // ...but samples of one class are not copies of each other (shift, noise).
  size_t j = 1;
  while (a.train.labels[j] != a.train.labels[0]) ++j;
  CHECK(!std::equal(a.train.images.begin(), a.train.images.begin() + 784,
                    a.train.images.begin() + std::ptrdiff_t(j * 784)));

  // Other shapes, and the defaults.
  const Dataset rgb = tether::make_synthetic(10, 1, 0, 3, 32, 32, 10);
  CHECK(rgb.images.size() == 10u * 3072u);
  CHECK(rgb.image_bytes() == 3072);
  const DataSplits def = tether::load_dataset({"synthetic", "", 0, 0, 1});
  CHECK(def.train.count() == tether::kSyntheticDefaultTrain);
  CHECK(def.test.count() == tether::kSyntheticDefaultTest);
  CHECK_THROWS_AS(tether::make_synthetic(0, 1), std::invalid_argument);
  CHECK_THROWS_AS(tether::make_synthetic(10, 1, 0, 0, 28, 28), std::invalid_argument);
}

TEST_CASE("gather_batch copies the chosen images and labels") {
  const Dataset d = tether::make_synthetic(50, 9, 0, 2, 6, 5, 4);
  const std::vector<uint32_t> idx = {7, 0, 49, 7, 13};
  Bytes images(idx.size() * d.image_bytes(), 0xAB);
  std::vector<int32_t> labels(idx.size(), -1);
  tether::gather_batch(d, idx.data(), idx.size(), images.data(), labels.data());
  for (size_t k = 0; k < idx.size(); ++k) {
    CHECK(labels[k] == d.labels[idx[k]]);
    CHECK(std::memcmp(images.data() + k * 60, d.images.data() + idx[k] * 60, 60) == 0);
  }
  const uint32_t bad[2] = {3, 50};
  CHECK_THROWS_WITH_AS(tether::gather_batch(d, bad, 2, images.data(), labels.data()),
                       "gather_batch: index 50 at position 1 outside [0, 50) of dataset synthetic",
                       std::out_of_range);
  tether::gather_batch(d, idx.data(), 0, nullptr, nullptr);  // n = 0 touches nothing
}
