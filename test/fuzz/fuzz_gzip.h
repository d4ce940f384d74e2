// gzip() for the data-file harnesses: the loaders read gzip or plain files
// (zlib decides from the content), so a harness may compress what it fuzzes
// to reach the parsing behind the inflate.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <vector>

#include "test/fuzz/fuzz_util.h"

namespace tether::fuzz {

// The gzip file (header, deflate stream, CRC and length trailer) of `plain`.
inline std::vector<uint8_t> gzip(const std::vector<uint8_t>& plain) {
  z_stream zs{};
  if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) die("deflateInit2 failed");
  std::vector<uint8_t> out(deflateBound(&zs, plain.size()) + 32);
  zs.next_in = const_cast<Bytef*>(plain.data());
  zs.avail_in = static_cast<uInt>(plain.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) die("deflate did not finish");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

}  // namespace tether::fuzz
