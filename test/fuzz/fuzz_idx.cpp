// Fuzzes the IDX reader (MNIST, Fashion-MNIST): load_idx on an image file and
// a label file holding the input, plain or gzip, as load_dataset reads them.
//
// Input: a flag byte (bit 0: gzip the image file, bit 1: the label file;
// bit 7: classes = 1 + bits 2..6, else 10), a u16 length of the image file's
// content, that content, then the label file's content.
// Properties checked: only DataError escapes, naming the file at fault
// first; a data set that loads holds exactly the bytes after the headers
// (count x rows x cols pixels, count labels, each < classes).
#include <cstring>
#include <string>
#include <vector>

#include "models/dataset.h"
#include "test/fuzz/fuzz_gzip.h"
#include "test/fuzz/fuzz_util.h"

using tether::DataError;
using tether::fuzz::refused;
using tether::fuzz::starts_with;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tether::fuzz::Input in(data, size);
  const uint8_t flags = in.byte();
  const int classes = (flags & 0x80) ? 1 + ((flags >> 2) & 31) : 10;
  const std::vector<uint8_t> images = in.bytes(in.take<uint16_t>());
  const std::vector<uint8_t> labels = in.rest();
  auto& dir = tether::fuzz::ScratchDir::get();
  const std::string ipath = dir.write("images-idx3-ubyte", (flags & 1) ? tether::fuzz::gzip(images) : images);
  const std::string lpath = dir.write("labels-idx1-ubyte", (flags & 2) ? tether::fuzz::gzip(labels) : labels);

  refused<>([&] {
    tether::Dataset d;
    try {
      d = tether::load_idx(ipath, lpath, classes);
    } catch (const DataError& e) {
      FUZZ_CHECK(starts_with(e.what(), ipath + ": ") || starts_with(e.what(), lpath + ": "),
                 std::string("error does not name the file: ") + e.what());
      FUZZ_CHECK(e.path() == ipath || e.path() == lpath, "DataError::path() " + e.path());
      return;
    }
    // Reference: the bytes after the 16-byte and 8-byte headers.
    FUZZ_CHECK(images.size() >= 16 && labels.size() >= 8, "loaded without complete headers");
    const size_t n = d.count();
    FUZZ_CHECK(n > 0 && d.channels == 1 && d.classes == classes, "shape");
    FUZZ_CHECK(d.image_bytes() * n == images.size() - 16 && d.images.size() == images.size() - 16 &&
                   std::memcmp(d.images.data(), images.data() + 16, d.images.size()) == 0,
               "images are not the file's pixels");
    FUZZ_CHECK(n == labels.size() - 8, "labels are not the file's");
    for (size_t i = 0; i < n; ++i)  // i over the samples
      FUZZ_CHECK(d.labels[i] == labels[8 + i] && d.labels[i] < classes, "label " + std::to_string(i));
  });
  return 0;
}
