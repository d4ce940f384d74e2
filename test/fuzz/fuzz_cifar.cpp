// Fuzzes the CIFAR-10 reader: load_cifar10 on a directory whose six batch
// files (data_batch_1..5.bin, test_batch.bin) all hold the input, plain or
// gzip, as load_dataset reads them.
//
// Input: a flag byte (bit 0: gzip), then the file's content.
// Properties checked: only DataError escapes, naming a file of the directory
// first; a data set that loads holds exactly the file's records (a label
// < 10, then 3072 pixels), five times in train, once in test.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "models/dataset.h"
#include "test/fuzz/fuzz_gzip.h"
#include "test/fuzz/fuzz_util.h"

using tether::DataError;
using tether::fuzz::refused;
using tether::fuzz::starts_with;

namespace {
// The directory: data_batch_1.bin, the others links to it. Made once.
std::string cifar_dir() {
  static const std::string dir = [] {
    auto& scratch = tether::fuzz::ScratchDir::get();
    const std::string d = scratch.path("cifar");
    ::mkdir(d.c_str(), 0700);
    scratch.write("cifar/data_batch_1.bin", nullptr, 0);
    for (const char* name : {"data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
                             "test_batch.bin"})
      if (::symlink("data_batch_1.bin", (d + "/" + name).c_str()) != 0) tether::fuzz::die("symlink in " + d);
    return d;
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tether::fuzz::Input in(data, size);
  const uint8_t flags = in.byte();
  const std::vector<uint8_t> file = in.rest();
  const std::string dir = cifar_dir();
  tether::fuzz::ScratchDir::get().write("cifar/data_batch_1.bin", (flags & 1) ? tether::fuzz::gzip(file) : file);

  refused<>([&] {
    tether::DataSplits s;
    try {
      s = tether::load_cifar10(dir);
    } catch (const DataError& e) {
      FUZZ_CHECK(starts_with(e.what(), dir + "/"), std::string("error does not name a file of the directory: ") + e.what());
      return;
    }
    constexpr size_t kRecord = 3073;
    const size_t records = file.size() / kRecord;
    FUZZ_CHECK(records > 0 && file.size() % kRecord == 0, "loaded a file of " + std::to_string(file.size()) + " bytes");
    FUZZ_CHECK(s.train.count() == 5 * records && s.test.count() == records, "record counts");
    for (size_t r = 0; r < records; ++r) {  // r over the file's records: test holds them once
      FUZZ_CHECK(s.test.labels[r] == file[r * kRecord] && s.test.labels[r] < 10, "label of record " + std::to_string(r));
      FUZZ_CHECK(std::memcmp(s.test.images.data() + r * 3072, file.data() + r * kRecord + 1, 3072) == 0,
                 "pixels of record " + std::to_string(r));
    }
    for (size_t k = 0; k < 5; ++k)  // k over the train batches: the same records again
      FUZZ_CHECK(std::memcmp(s.train.images.data() + k * records * 3072, s.test.images.data(), records * 3072) == 0,
                 "train batch " + std::to_string(k + 1));
  });
  return 0;
}
