#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "models/kernel_math.h"

namespace tether {

namespace {
constexpr char kMagic[8] = {'T', 'E', 'T', 'H', 'E', 'R', 'C', 'K'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxHeaderBytes = 1 << 20;

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
// Owns a file descriptor: closed on every path out of a scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // close(2)'s result (a delayed write error surfaces here); the fd is gone either way.
  int close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// The arrays move between memory and the file in slices of this size, each
// hashed while it is in cache (HashStream); nothing holds the whole file.
constexpr size_t kSliceBytes = size_t(1) << 20;

// Reads up to n bytes at p: the count read, short only at the end of the
// file; a read error throws, naming `path`.
size_t read_full(int fd, void* p, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::read(fd, static_cast<char*>(p) + done, n - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw CheckpointError(path + ": reading checkpoint failed: " + std::strerror(errno));
    if (got == 0) break;
    done += size_t(got);
  }
  return done;
}

// Whether `meta`'s counts describe a file of file_bytes bytes with a header
// of header_len: "" when they do, else what is wrong (its message).
std::string layout_error(const nlohmann::json& meta, size_t file_bytes, uint32_t header_len, size_t counts[3]) {
  static const char* const keys[3] = {"params_count", "momentum_count", "anchor_count"};
  if (!meta.is_object()) return "checkpoint header is not a JSON object";
  size_t total = 0;
  for (int i = 0; i < 3; ++i) {  // i over the three arrays
    if (!meta.contains(keys[i]) || !meta[keys[i]].is_number_unsigned()) return std::string("header lacks ") + keys[i];
    counts[i] = meta[keys[i]].get<size_t>();
    if (counts[i] > file_bytes) return std::string("header field ") + keys[i] + " is larger than the file";
    total += counts[i];
  }
  if (16 + header_len + total * sizeof(float) + 8 != file_bytes) {
    return "size mismatch: header promises " + std::to_string(total) + " floats, file holds " +
           std::to_string((file_bytes - 24 - header_len) / sizeof(float));
  }
  return "";
}
// Checks magic, version and header length of a file of `file_bytes` bytes
// whose first `have` (>= 16 unless the file is shorter) are at `data`;
// returns the header length.
uint32_t check_prefix(const std::string& path, const char* data, size_t have, size_t file_bytes) {
  auto fail = [&](const std::string& what) { throw CheckpointError(path + ": " + what); };
  if (file_bytes < 16 + 8 || have < 16) fail("truncated checkpoint (" + std::to_string(file_bytes) + " bytes)");
  if (std::memcmp(data, kMagic, 8) != 0) fail("not a tether checkpoint (bad magic)");
  uint32_t version, header_len;
  std::memcpy(&version, data + 8, 4);
  std::memcpy(&header_len, data + 12, 4);
  if (version != kVersion) fail("checkpoint version " + std::to_string(version) + ", this build reads " + std::to_string(kVersion));
  if (header_len > kMaxHeaderBytes || 16 + size_t(header_len) + 8 > file_bytes) fail("truncated checkpoint header");
  return header_len;
}

nlohmann::json parse_header(const std::string& path, const std::string& text) {
  nlohmann::json meta = nlohmann::json::parse(text, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) throw CheckpointError(path + ": checkpoint header is not a JSON object");
  // The keys the trainer reads as typed values (Trainer::setup,
  // evaluate_checkpoint): one of another type is refused here, naming it,
  // rather than thrown later by the JSON library without the file's name.
  struct Typed {
    const char* key;
    bool (*ok)(const nlohmann::json&);
    const char* expected;
  };
  static const Typed kTyped[] = {
      {"step", [](const nlohmann::json& v) { return v.is_number_unsigned(); }, "an unsigned integer"},
      {"round", [](const nlohmann::json& v) { return v.is_number_unsigned(); }, "an unsigned integer"},
      {"node", [](const nlohmann::json& v) { return v.is_number_unsigned(); }, "an unsigned integer"},
      {"test_acc", [](const nlohmann::json& v) { return v.is_number(); }, "a number"},
      {"max_delta", [](const nlohmann::json& v) { return v.is_number(); }, "a number"},
      {"cut", [](const nlohmann::json& v) { return v.is_boolean(); }, "true or false"},
      {"model", [](const nlohmann::json& v) { return v.is_string(); }, "a string"},
      {"data", [](const nlohmann::json& v) { return v.is_string(); }, "a string"},
  };
  for (const Typed& t : kTyped) {  // t over the typed keys; absent ones keep their defaults
    auto it = meta.find(t.key);
    if (it != meta.end() && !t.ok(*it)) {
      std::string got = it->dump();
      if (got.size() > 60) got = got.substr(0, 57) + "...";
      throw CheckpointError(path + ": header field " + t.key + " is " + got + ", expected " + t.expected);
    }
  }
  return meta;
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
  if (bytes > i) std::memcpy(&tail, p + i, bytes - i);  // an empty buffer may have no address
  return kmath::mix64(h ^ tail ^ (uint64_t(bytes - i) << 56));
}

HashStream::HashStream(uint64_t total, uint64_t seed) : h_(kmath::mix64(seed ^ total)), total_(total) {}

void HashStream::update(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  fed_ += bytes;
  auto word = [this](const unsigned char* w) {
    uint64_t v;
    std::memcpy(&v, w, 8);
    h_ = kmath::mix64(h_ ^ v) + 0x9e3779b97f4a7c15ull;
  };
  if (partial_n_ > 0) {  // complete the word a previous piece began
    const size_t take = std::min(bytes, 8 - partial_n_);
    std::memcpy(partial_ + partial_n_, p, take);
    partial_n_ += take;
    p += take;
    bytes -= take;
    if (partial_n_ < 8) return;
    word(partial_);
    partial_n_ = 0;
  }
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) word(p + i);  // i over the whole words
  if (bytes > i) {
    std::memcpy(partial_, p + i, bytes - i);
    partial_n_ = bytes - i;
  }
}

uint64_t HashStream::finish() const {
  if (fed_ != total_)
    throw std::logic_error("HashStream: fed " + std::to_string(fed_) + " bytes, announced " + std::to_string(total_));
  uint64_t tail = 0;
  std::memcpy(&tail, partial_, partial_n_);
  return kmath::mix64(h_ ^ tail ^ (uint64_t(partial_n_) << 56));
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
  const std::string header = meta.dump();
  std::string prefix(kMagic, 8);
  put_u32(prefix, kVersion);
  put_u32(prefix, uint32_t(header.size()));
  prefix += header;
  const std::vector<float>* arrays[3] = {&ck.params, &ck.momentum, &ck.anchor};
  uint64_t body = prefix.size();
  for (const std::vector<float>* a : arrays) body += a->size() * sizeof(float);
  HashStream hash(body);  // the checksum covers every byte before it

  // The temporary file: written, fsynced and closed before the rename; on
  // any failure closed and removed. Every error names `path`.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) throw CheckpointError(path + ": cannot write checkpoint: " + std::strerror(errno));
    auto fail = [&](const char* what, int err) {
      fd.reset();
      ::unlink(tmp.c_str());
      throw CheckpointError(path + ": " + what + ": " + std::strerror(err));
    };
    auto put = [&](const void* data, size_t bytes) {
      const char* p = static_cast<const char*>(data);
      size_t done = 0;
      while (done < bytes) {
        ssize_t n = ::write(fd.get(), p + done, bytes - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("writing checkpoint failed", n < 0 ? errno : EIO);
        done += size_t(n);
      }
    };
    hash.update(prefix.data(), prefix.size());
    put(prefix.data(), prefix.size());
    for (const std::vector<float>* a : arrays) {  // a over the three arrays, slice by slice
      const char* p = reinterpret_cast<const char*>(a->data());
      const size_t bytes = a->size() * sizeof(float);
      for (size_t off = 0; off < bytes; off += kSliceBytes) {  // off over the slices
        const size_t n = std::min(kSliceBytes, bytes - off);
        hash.update(p + off, n);
        put(p + off, n);
      }
    }
    const uint64_t sum = hash.finish();
    put(&sum, sizeof sum);
    if (::fsync(fd.get()) != 0) fail("flushing checkpoint failed", errno);
    if (fd.close() != 0) fail("closing checkpoint failed", errno);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw CheckpointError(path + ": renaming checkpoint into place failed: " + std::strerror(err));
  }
  // The rename lives in the directory: sync it too, or a power loss may lose
  // the new name (and with it the file).
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) {
    throw CheckpointError(path + ": syncing its directory " + dir + " failed: " + std::strerror(errno));
  }
}

// Reads the file once, the arrays straight into their vectors (no copy of
// the file in memory), hashing as it goes. The checksum is judged before
// the header's content: a damaged file reads "checksum mismatch" whichever
// byte was hit, as when the file was read whole.
Checkpoint load_checkpoint(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw CheckpointError(path + ": cannot open checkpoint: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw CheckpointError(path + ": cannot open checkpoint: " + std::strerror(errno));
  const auto file_bytes = size_t(st.st_size);
  auto fail = [&](const std::string& what) { throw CheckpointError(path + ": " + what); };
  char prefix[16] = {};
  const uint32_t header_len = check_prefix(path, prefix, read_full(fd.get(), prefix, sizeof prefix, path), file_bytes);
  std::string header(header_len, '\0');
  if (read_full(fd.get(), header.data(), header_len, path) != header_len) fail("truncated checkpoint header");
  HashStream hash(file_bytes - 8);
  hash.update(prefix, sizeof prefix);
  hash.update(header.data(), header.size());
  // Where the header describes this file, its arrays land in place;
  // otherwise the rest is only hashed, and the header's fault is named below.
  Checkpoint ck;
  size_t counts[3] = {0, 0, 0};
  const bool laid_out = layout_error(nlohmann::json::parse(header, nullptr, false), file_bytes, header_len, counts).empty();
  auto read_hashed = [&](char* dst, size_t bytes) {
    for (size_t off = 0; off < bytes; off += kSliceBytes) {  // off over the slices
      const size_t n = std::min(kSliceBytes, bytes - off);
      if (read_full(fd.get(), dst + off, n, path) != n) fail("checksum mismatch: the file is corrupt or truncated");
      hash.update(dst + off, n);
    }
  };
  if (laid_out) {
    std::vector<float>* dst[3] = {&ck.params, &ck.momentum, &ck.anchor};
    for (int i = 0; i < 3; ++i) {  // i over the three arrays
      dst[i]->resize(counts[i]);
      read_hashed(reinterpret_cast<char*>(dst[i]->data()), counts[i] * sizeof(float));
    }
  } else {
    std::vector<char> scratch(std::min(kSliceBytes, file_bytes));
    size_t left = file_bytes - 16 - header_len - 8;
    while (left > 0) {  // bounded: the file's size
      const size_t n = std::min(left, scratch.size());
      read_hashed(scratch.data(), n);
      left -= n;
    }
  }
  uint64_t stored = 0;
  if (read_full(fd.get(), &stored, 8, path) != 8 || stored != hash.finish())
    fail("checksum mismatch: the file is corrupt or truncated");
  ck.meta = parse_header(path, header);
  const std::string layout = layout_error(ck.meta, file_bytes, header_len, counts);
  if (!layout.empty()) fail(layout);
  if (!laid_out) fail("checkpoint header changed while it was read");  // unreachable: the same header, judged twice
  return ck;
}

nlohmann::json load_checkpoint_meta(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw CheckpointError(path + ": cannot open checkpoint: " + std::strerror(errno));
  const auto file_bytes = size_t(in.tellg());
  in.seekg(0);
  char prefix[16] = {};
  in.read(prefix, sizeof prefix);
  const uint32_t header_len = check_prefix(path, prefix, size_t(in.gcount()), file_bytes);
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (size_t(in.gcount()) != header_len) throw CheckpointError(path + ": truncated checkpoint header");
  return parse_header(path, header);
}

nlohmann::json run_config_meta(const Config& cfg) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : config_run_keys(cfg)) out[key] = value;
  return out;
}

void check_resume_config(const std::string& path, const nlohmann::json& meta, const Config& cfg) {
  const RunKeys ours = config_run_keys(cfg);
  std::string may_change =
      "keys that may change: log.*, device, data.path, train.threads, train.tf32, train.checkpoint, "
      "train.eval_every_epochs, train.max_steps, train.checkpoint_every_steps, monitor.snapshots, "
      "monitor.snapshot_every, net.*, cluster.peers endpoints";
  auto it = meta.find("run_config");
  if (it == meta.end()) {
    // Written before checkpoints stored their run keys: only a hash to compare.
    const uint64_t want = legacy_config_hash(cfg);
    auto h = meta.find("config_hash");
    if (h == meta.end() || !h->is_number_unsigned() || h->get<uint64_t>() != want) {
      throw CheckpointError(path + ": was written by a run with another config (config_hash " +
                            (h == meta.end() ? std::string("missing") : h->dump()) + ", this run's is " +
                            std::to_string(want) + "; an older checkpoint, so the keys cannot be named; " +
                            may_change + ")");
    }
    return;
  }
  if (!it->is_object()) throw CheckpointError(path + ": run_config is not a JSON object");
  RunKeys theirs;
  for (auto k = it->begin(); k != it->end(); ++k) {
    if (!k.value().is_string()) throw CheckpointError(path + ": run_config." + k.key() + " is not a string");
    theirs.emplace_back(k.key(), k.value().get<std::string>());
  }
  std::string was, now;
  for (const std::string& key : run_keys_diff(theirs, ours)) {
    if (run_key_may_change_on_resume(key)) continue;
    auto value_in = [&](const RunKeys& keys) {
      for (const auto& [k, v] : keys) {
        if (k == key) return v;
      }
      return std::string("(absent)");
    };
    was += (was.empty() ? "" : ", ") + key + "=" + value_in(theirs);
    now += (now.empty() ? "" : ", ") + key + "=" + value_in(ours);
  }
  if (!was.empty()) {
    throw CheckpointError(path + ": was written by a run with " + was + "; this run has " + now + " (" + may_change +
                          ")");
  }
}

int resume_source_node(const std::string& path, const nlohmann::json& meta, const Config& cfg,
                       const std::string& model) {
  auto expect = [&](const char* key, const nlohmann::json& want) {
    auto it = meta.find(key);
    if (it == meta.end() || *it != want) {
      throw CheckpointError(path + ": " + key + " is " + (it == meta.end() ? std::string("missing") : it->dump()) +
                            ", this run needs " + want.dump());
    }
  };
  expect("model", model);
  expect("nodes", cfg.nodes());
  expect("batch_size", cfg.data.batch_size);
  expect("seed", cfg.train.seed);
  // Which node wrote it: any of this cluster's (checked after "nodes", so
  // that a checkpoint of a larger cluster is named as that).
  auto it = meta.find("node");
  if (it == meta.end() || !it->is_number_unsigned() || it->get<uint64_t>() >= uint64_t(cfg.nodes())) {
    throw CheckpointError(path + ": node is " + (it == meta.end() ? std::string("missing") : it->dump()) +
                          ", this run needs one of its nodes 0.." + std::to_string(cfg.nodes() - 1));
  }
  return int(it->get<uint64_t>());
}

}  // namespace tether
