#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "models/kernel_math.h"

namespace tether {

namespace {
constexpr char kMagic[8] = {'T', 'E', 'T', 'H', 'E', 'R', 'C', 'K'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxHeaderBytes = 1 << 20;

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }
void put_floats(std::string& out, const std::vector<float>& v) {
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}
}  // namespace

uint64_t hash_bytes(const void* data, size_t bytes, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = kmath::mix64(seed ^ bytes);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = kmath::mix64(h ^ w) + 0x9e3779b97f4a7c15ull;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, bytes - i);
  return kmath::mix64(h ^ tail ^ (uint64_t(bytes - i) << 56));
}

std::string params_hash(const std::vector<float>& params) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(hash_bytes(params.data(), params.size() * sizeof(float))));
  return buf;
}

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  nlohmann::json meta = ck.meta;
  meta["params_count"] = ck.params.size();
  meta["momentum_count"] = ck.momentum.size();
  meta["anchor_count"] = ck.anchor.size();
  std::string header = meta.dump();
  std::string out(kMagic, 8);
  put_u32(out, kVersion);
  put_u32(out, uint32_t(header.size()));
  out += header;
  put_floats(out, ck.params);
  put_floats(out, ck.momentum);
  put_floats(out, ck.anchor);
  put_u64(out, hash_bytes(out.data(), out.size()));

  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw CheckpointError(path + ": cannot write checkpoint: " + std::strerror(errno));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::write(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw CheckpointError(path + ": writing checkpoint failed: " + std::strerror(err));
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw CheckpointError(path + ": flushing checkpoint failed: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw CheckpointError(path + ": renaming checkpoint into place failed: " + std::strerror(err));
  }
}

Checkpoint load_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(path + ": cannot open checkpoint: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  auto fail = [&](const std::string& what) { throw CheckpointError(path + ": " + what); };
  if (data.size() < 16 + 8) fail("truncated checkpoint (" + std::to_string(data.size()) + " bytes)");
  if (std::memcmp(data.data(), kMagic, 8) != 0) fail("not a tether checkpoint (bad magic)");
  uint32_t version, header_len;
  std::memcpy(&version, data.data() + 8, 4);
  std::memcpy(&header_len, data.data() + 12, 4);
  if (version != kVersion) fail("checkpoint version " + std::to_string(version) + ", this build reads " + std::to_string(kVersion));
  if (header_len > kMaxHeaderBytes || 16 + size_t(header_len) + 8 > data.size()) fail("truncated checkpoint header");
  uint64_t stored;
  std::memcpy(&stored, data.data() + data.size() - 8, 8);
  if (stored != hash_bytes(data.data(), data.size() - 8)) fail("checksum mismatch: the file is corrupt or truncated");
  Checkpoint ck;
  ck.meta = nlohmann::json::parse(data.substr(16, header_len), nullptr, false);
  if (ck.meta.is_discarded() || !ck.meta.is_object()) fail("checkpoint header is not a JSON object");
  size_t counts[3];
  const char* keys[3] = {"params_count", "momentum_count", "anchor_count"};
  size_t total = 0;
  for (int i = 0; i < 3; ++i) {
    if (!ck.meta.contains(keys[i]) || !ck.meta[keys[i]].is_number_unsigned()) fail(std::string("header lacks ") + keys[i]);
    counts[i] = ck.meta[keys[i]].get<size_t>();
    if (counts[i] > data.size()) fail(std::string("header field ") + keys[i] + " is larger than the file");
    total += counts[i];
  }
  if (16 + header_len + total * sizeof(float) + 8 != data.size()) {
    fail("size mismatch: header promises " + std::to_string(total) + " floats, file holds " +
         std::to_string((data.size() - 24 - header_len) / sizeof(float)));
  }
  const char* p = data.data() + 16 + header_len;
  std::vector<float>* dst[3] = {&ck.params, &ck.momentum, &ck.anchor};
  for (int i = 0; i < 3; ++i) {
    dst[i]->resize(counts[i]);
    std::memcpy(dst[i]->data(), p, counts[i] * sizeof(float));
    p += counts[i] * sizeof(float);
  }
  return ck;
}

}  // namespace tether
