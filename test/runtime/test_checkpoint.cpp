// Checkpoints: round trip, atomic replacement, corruption detected, and which
// checkpoints a node may resume from (any node's of its cluster).
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "test/runtime/process_util.h"

using tether::Checkpoint;
using tether::CheckpointError;
using tether::testing::TempDir;

namespace {
Checkpoint sample() {
  Checkpoint ck;
  ck.meta = {{"model", "mlp"}, {"step", 42}, {"epoch", 1}};
  for (int i = 0; i < 1000; ++i) ck.params.push_back(float(i) * 0.25f - 3.0f);
  for (int i = 0; i < 900; ++i) ck.momentum.push_back(float(i % 7) * -0.5f);
  ck.anchor = {1.0f, 2.0f, 3.0f};
  return ck;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
std::string load_error(const std::string& path) {
  try {
    tether::load_checkpoint(path);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}
// Open descriptors of this process.
int open_fds() {
  int n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}
std::string save_error(const std::string& path, const Checkpoint& ck) {
  try {
    tether::save_checkpoint(path, ck);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("checkpoint: round trip keeps every bit and the metadata") {
  TempDir dir("ckpt");
  Checkpoint ck = sample();
  std::string path = dir.file("a.ckpt");
  tether::save_checkpoint(path, ck);
  Checkpoint back = tether::load_checkpoint(path);
  CHECK(back.params == ck.params);
  CHECK(back.momentum == ck.momentum);
  CHECK(back.anchor == ck.anchor);
  CHECK(back.meta["step"] == 42);
  CHECK(back.meta["model"] == "mlp");
  // No temporary file is left next to it.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  CHECK(files == 1);
}

namespace {
// A checkpoint file laid out by hand (README "Checkpoints": magic, version,
// header length, JSON header, the three arrays, then hash_bytes of all that):
// the reference the streaming writer and reader are held to.
std::string by_hand(const nlohmann::json& header, const std::vector<std::vector<float>>& arrays) {
  const std::string text = header.dump();
  std::string out("TETHERCK", 8);
  const uint32_t version = 1, len = uint32_t(text.size());
  out.append(reinterpret_cast<const char*>(&version), 4);
  out.append(reinterpret_cast<const char*>(&len), 4);
  out += text;
  for (const auto& a : arrays) out.append(reinterpret_cast<const char*>(a.data()), a.size() * sizeof(float));
  const uint64_t sum = tether::hash_bytes(out.data(), out.size());
  out.append(reinterpret_cast<const char*>(&sum), 8);
  return out;
}
}  // namespace

TEST_CASE("checkpoint: streamed in slices, the file is byte for byte the layout built by hand") {
  TempDir dir("ckpt");
  // Several 1 MiB slices, odd counts: the arrays' words straddle slices and
  // the checksum's 8-byte words straddle arrays.
  Checkpoint ck;
  ck.meta = {{"model", "mlp"}, {"step", 7}};
  for (size_t i = 0; i < 1500001; ++i) ck.params.push_back(float(i % 1013) * 0.001f - 0.5f);
  ck.momentum = {1.0f, -2.0f, 3.5f, 0.25f, -0.125f, 6.0f, 7.0f};
  for (size_t i = 0; i < 262145; ++i) ck.anchor.push_back(float(i % 17) - 8.0f);
  const std::string path = dir.file("big.ckpt");
  tether::save_checkpoint(path, ck);
  nlohmann::json header = ck.meta;
  header["params_count"] = ck.params.size();
  header["momentum_count"] = ck.momentum.size();
  header["anchor_count"] = ck.anchor.size();
  const std::string expected = by_hand(header, {ck.params, ck.momentum, ck.anchor});
  const std::string written = slurp(path);
  REQUIRE(written.size() == expected.size());
  CHECK(written == expected);

  const Checkpoint back = tether::load_checkpoint(dir.write("hand.ckpt", expected));
  CHECK(back.params == ck.params);
  CHECK(back.momentum == ck.momentum);
  CHECK(back.anchor == ck.anchor);
  CHECK(back.meta["step"] == 7);
  // Damage in the last slice of the params, in the anchor, or a short file:
  // the checksum names it, as for a small file.
  for (size_t at : {size_t(16 + 1500000 * 4), expected.size() - 20}) {
    std::string bad = expected;
    bad[at] ^= 0x01;
    CHECK(load_error(dir.write("bad.ckpt", bad)) == dir.file("bad.ckpt") + ": checksum mismatch: the file is corrupt or truncated");
  }
  CHECK(load_error(dir.write("short.ckpt", expected.substr(0, expected.size() - 3))) ==
        dir.file("short.ckpt") + ": checksum mismatch: the file is corrupt or truncated");
}

TEST_CASE("checkpoint: a header whose counts do not describe the file is refused after its checksum passes") {
  TempDir dir("ckpt");
  const std::vector<float> a = {1, 2, 3}, b = {4, 5}, c = {};
  nlohmann::json good = {{"model", "mlp"}, {"params_count", 3}, {"momentum_count", 2}, {"anchor_count", 0}};
  CHECK(tether::load_checkpoint(dir.write("good.ckpt", by_hand(good, {a, b, c}))).momentum == b);
  nlohmann::json lacks = good;
  lacks.erase("anchor_count");
  CHECK(load_error(dir.write("lacks.ckpt", by_hand(lacks, {a, b, c}))) ==
        dir.file("lacks.ckpt") + ": header lacks anchor_count");
  nlohmann::json more = good;
  more["momentum_count"] = 3;
  CHECK(load_error(dir.write("more.ckpt", by_hand(more, {a, b, c}))) ==
        dir.file("more.ckpt") + ": size mismatch: header promises 6 floats, file holds 5");
  nlohmann::json huge = good;
  huge["params_count"] = uint64_t(1) << 40;
  CHECK(load_error(dir.write("huge.ckpt", by_hand(huge, {a, b, c}))) ==
        dir.file("huge.ckpt") + ": header field params_count is larger than the file");
  CHECK(load_error(dir.write("array.ckpt", by_hand(nlohmann::json::array({1, 2}), {a, b, c}))) ==
        dir.file("array.ckpt") + ": checkpoint header is not a JSON object");
  // A byte of the header itself damaged: the checksum, not the JSON, speaks.
  std::string hit = by_hand(good, {a, b, c});
  hit[20] = '{';
  CHECK(load_error(dir.write("hit.ckpt", hit)) == dir.file("hit.ckpt") + ": checksum mismatch: the file is corrupt or truncated");
}

TEST_CASE("HashStream: any split of the bytes hashes as hash_bytes of the whole") {
  std::vector<unsigned char> bytes(1000);
  uint64_t x = 88172645463325252ull;
  for (auto& v : bytes) {  // xorshift: reproducible bytes
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = static_cast<unsigned char>(x);
  }
  for (size_t total : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(64), size_t(999), size_t(1000)}) {
    for (size_t piece : {size_t(1), size_t(3), size_t(8), size_t(13), size_t(1000)}) {
      CAPTURE(total);
      CAPTURE(piece);
      tether::HashStream h(total, 5);
      for (size_t off = 0; off < total; off += piece) h.update(bytes.data() + off, std::min(piece, total - off));
      CHECK(h.finish() == tether::hash_bytes(bytes.data(), total, 5));
    }
  }
  tether::HashStream under(10);
  under.update(bytes.data(), 9);
  CHECK_THROWS_AS(under.finish(), std::logic_error);
}

TEST_CASE("checkpoint: overwrite is atomic (old or new, never half)") {
  TempDir dir("ckpt");
  std::string path = dir.file("a.ckpt");
  Checkpoint ck = sample();
  tether::save_checkpoint(path, ck);
  ck.params[5] = 99.0f;
  tether::save_checkpoint(path, ck);
  CHECK(tether::load_checkpoint(path).params[5] == 99.0f);
  // An unwritable target directory fails with a message and leaves the old file.
  CHECK_THROWS_AS(tether::save_checkpoint(dir.file("missing/dir/a.ckpt"), ck), CheckpointError);
  CHECK(tether::load_checkpoint(path).params[5] == 99.0f);
}

TEST_CASE("checkpoint: corrupt, truncated and foreign files are rejected with the file named") {
  TempDir dir("ckpt");
  std::string path = dir.file("a.ckpt");
  tether::save_checkpoint(path, sample());
  const std::string good = slurp(path);

  CHECK(load_error(dir.file("nope.ckpt")).find("nope.ckpt: cannot open checkpoint") != std::string::npos);
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  CHECK(load_error(dir.write("flip.ckpt", flipped)).find("flip.ckpt: checksum mismatch") != std::string::npos);
  CHECK(load_error(dir.write("trunc.ckpt", good.substr(0, good.size() - 100))).find("trunc.ckpt: checksum mismatch") !=
        std::string::npos);
  CHECK(load_error(dir.write("tiny.ckpt", good.substr(0, 10))).find("tiny.ckpt: truncated checkpoint") !=
        std::string::npos);
  std::string magic = good;
  magic[0] = 'X';
  CHECK(load_error(dir.write("magic.ckpt", magic)).find("magic.ckpt: not a tether checkpoint") != std::string::npos);
  CHECK(load_error(dir.write("empty.ckpt", "")).find("empty.ckpt: truncated") != std::string::npos);
}

TEST_CASE("params_hash: equal buffers hash equal, one flipped bit does not") {
  std::vector<float> a(12345, 0.5f), b = a;
  CHECK(tether::params_hash(a) == tether::params_hash(b));
  b[12000] = std::nextafter(b[12000], 1.0f);
  CHECK(tether::params_hash(a) != tether::params_hash(b));
  std::vector<float> c(a.begin(), a.end() - 1);
  CHECK(tether::params_hash(a) != tether::params_hash(c));
}

// Every failing save names the file, removes its temporary file and closes
// every descriptor it opened. The fsync failure is forced by planting the
// temporary file's name (path + ".tmp." + pid, see save_checkpoint) as a
// symlink to /dev/null, on which fsync fails with EINVAL; should the name
// scheme change, the save succeeds and this test fails loudly.
TEST_CASE("checkpoint: failed saves name the file and leak no descriptor") {
  TempDir dir("ckptfail");
  const Checkpoint ck = sample();
  const int before = open_fds();

  std::string missing = dir.file("missing/dir/a.ckpt");
  CHECK(save_error(missing, ck).find(missing + ": cannot write checkpoint") == 0);
  CHECK(open_fds() == before);

  std::string target = dir.file("b.ckpt");
  std::string tmp = target + ".tmp." + std::to_string(::getpid());
  std::filesystem::create_symlink("/dev/null", tmp);
  CHECK(save_error(target, ck).find(target + ": flushing checkpoint failed") == 0);
  CHECK(open_fds() == before);
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(tmp)));
  CHECK_FALSE(std::filesystem::exists(target));

  // The target is a directory: the rename fails, nothing is left behind.
  std::filesystem::create_directory(dir.file("c.ckpt"));
  CHECK(save_error(dir.file("c.ckpt"), ck).find(dir.file("c.ckpt") + ": renaming checkpoint into place failed") == 0);
  CHECK(open_fds() == before);
  int entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  CHECK(entries == 1);   // c.ckpt/ itself

  // And a save still round-trips (the directory sync succeeds), also for a
  // file in the current directory (relative path, no parent named).
  tether::save_checkpoint(target, ck);
  CHECK(tether::load_checkpoint(target).params == ck.params);
  CHECK(tether::load_checkpoint_meta(target)["step"] == 42);
  CHECK(open_fds() == before);
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  std::string relative_error = save_error("rel.ckpt", ck);
  std::filesystem::current_path(cwd);
  CHECK(relative_error == "");
  CHECK(tether::load_checkpoint(dir.file("rel.ckpt")).params == ck.params);
}

// Found by fuzzing (test/fuzz/fuzz_checkpoint.cpp). Empty arrays: the loader
// copied zero bytes from or to a null data(), undefined behaviour that only
// UBSan sees (the fuzz build runs this file's inputs as seeds). Header keys of
// the wrong type: the trainer's typed reads threw a JSON library error that
// named no file, exit 1 instead of 2.
TEST_CASE("checkpoint: empty arrays load; header keys of the wrong type are refused naming key and file") {
  TempDir dir("ckpt");
  Checkpoint empty;
  empty.meta = {{"model", "mlp"}, {"step", 0}};
  tether::save_checkpoint(dir.file("empty.ckpt"), empty);
  const Checkpoint back = tether::load_checkpoint(dir.file("empty.ckpt"));
  CHECK(back.params.empty());
  CHECK(back.momentum.empty());
  CHECK(back.anchor.empty());
  CHECK(tether::params_hash({}) == tether::params_hash(back.params));

  const std::pair<nlohmann::json, std::string> bad[] = {
      {{"step", "ten"}, "header field step is \"ten\", expected an unsigned integer"},
      {{"step", -1}, "header field step is -1, expected an unsigned integer"},
      {{"round", 1.5}, "header field round is 1.5, expected an unsigned integer"},
      {{"test_acc", "high"}, "header field test_acc is \"high\", expected a number"},
      {{"max_delta", nullptr}, "header field max_delta is null, expected a number"},
      {{"cut", 1}, "header field cut is 1, expected true or false"},
      {{"model", 3}, "header field model is 3, expected a string"},
      {{"data", {1, 2}}, "header field data is [1,2], expected a string"},
  };
  for (const auto& [field, message] : bad) {
    CAPTURE(message);
    Checkpoint ck = sample();
    ck.meta[field[0].get<std::string>()] = field[1];
    const std::string path = dir.file("typed.ckpt");
    tether::save_checkpoint(path, ck);
    CHECK(load_error(path) == path + ": " + message);
    std::string meta_error;
    try {
      tether::load_checkpoint_meta(path);
    } catch (const CheckpointError& e) {
      meta_error = e.what();
    }
    CHECK(meta_error == path + ": " + message);
  }
  // The types the trainer writes load.
  Checkpoint ok = sample();
  ok.meta.update({{"step", uint64_t(5)}, {"round", uint64_t(2)}, {"test_acc", -1.0}, {"max_delta", 0},
                  {"cut", true}, {"data", "synthetic"}});
  tether::save_checkpoint(dir.file("ok.ckpt"), ok);
  CHECK(tether::load_checkpoint(dir.file("ok.ckpt")).meta.value("step", uint64_t(0)) == 5);
}

// --resume of another node's checkpoint (a cluster resumed from one file after
// a quorum loss, README "Checkpoints"): any node of the same cluster is
// accepted and named; a checkpoint of another cluster size, model, batch or
// seed, or one without a valid node id, is refused naming the file.
TEST_CASE("checkpoint: resume_source_node accepts any node of the same cluster, refuses another cluster naming the file") {
  TempDir dir("ckpt-source");
  auto cluster = [](int nodes) {
    nlohmann::json peers = nlohmann::json::array();
    for (int i = 0; i < nodes; ++i) peers.push_back({{"id", i}, {"host", "127.0.0.1"}, {"port", 7000 + i}});
    return tether::parse_config({{"model", {{"name", "mlp"}, {"hidden", 16}}},
                                 {"data", {{"name", "synthetic"}, {"batch_size", 16}}},
                                 {"train", {{"seed", 3}}},
                                 {"cluster", {{"peers", peers}}},
                                 {"net", {{"security", "none"}}}});
  };
  const tether::Config four = cluster(4), two = cluster(2);
  // As Trainer::save writes it: node 2 of 4, through a file (the header's types as loaded).
  Checkpoint ck = sample();
  ck.meta = {{"model", "mlp"}, {"node", 2}, {"nodes", 4}, {"batch_size", 16}, {"seed", 3}, {"step", 43},
             {"round", 43}, {"cut", false}};
  const std::string path = dir.file("node-2.ckpt");
  tether::save_checkpoint(path, ck);
  const nlohmann::json meta = tether::load_checkpoint(path).meta;
  CHECK(tether::resume_source_node(path, meta, four, "mlp") == 2);   // whichever node of the 4 resumes from it

  auto refusal = [&](const nlohmann::json& m, const tether::Config& cfg, const std::string& model = "mlp") {
    try {
      tether::resume_source_node(path, m, cfg, model);
    } catch (const CheckpointError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(refusal(meta, two) == path + ": nodes is 4, this run needs 2");
  CHECK(refusal(meta, four, "lenet") == path + ": model is \"mlp\", this run needs \"lenet\"");
  nlohmann::json other = meta;
  other["batch_size"] = 32;
  CHECK(refusal(other, four) == path + ": batch_size is 32, this run needs 16");
  other = meta;
  other["seed"] = 4;
  CHECK(refusal(other, four) == path + ": seed is 4, this run needs 3");
  other = meta;
  other.erase("node");
  CHECK(refusal(other, four) == path + ": node is missing, this run needs one of its nodes 0..3");
  other["node"] = 4;
  CHECK(refusal(other, four) == path + ": node is 4, this run needs one of its nodes 0..3");
  other["node"] = -1;
  CHECK(refusal(other, four) == path + ": node is -1, this run needs one of its nodes 0..3");

  // A header whose node is not an unsigned integer is refused at load, naming key and file.
  ck.meta["node"] = "two";
  tether::save_checkpoint(path, ck);
  CHECK(load_error(path) == path + ": header field node is \"two\", expected an unsigned integer");
}
