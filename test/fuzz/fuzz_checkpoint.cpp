// Fuzzes the checkpoint loader: load_checkpoint and load_checkpoint_meta
// (runtime/checkpoint.h) on a file holding the input, as `tether train
// --resume` and `tether eval` read it.
//
// Input: one flag byte, then the file. Flag bit 0 appends the file's correct
// checksum, so that inputs get past it to the header, the counts and the
// meta types.
// Properties checked: only CheckpointError escapes, its message starting
// with the file's path; a checkpoint that loads has the arrays its header
// promises, its meta can be read the way the trainer reads it, and it saves
// and loads back to the same content.
#include <cstring>
#include <string>
#include <vector>

#include "runtime/checkpoint.h"
#include "test/fuzz/fuzz_util.h"

using tether::CheckpointError;
using tether::fuzz::refused;
using tether::fuzz::starts_with;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tether::fuzz::Input in(data, size);
  const uint8_t flags = in.byte();
  std::vector<uint8_t> file = in.rest();
  if (flags & 1) {
    const uint64_t sum = tether::hash_bytes(file.data(), file.size());
    for (int b = 0; b < 8; ++b) file.push_back(static_cast<uint8_t>(sum >> (8 * b)));
  }
  auto& dir = tether::fuzz::ScratchDir::get();
  const std::string path = dir.write("node-0.ckpt", file);
  auto names_file = [&](const CheckpointError& e) {
    FUZZ_CHECK(starts_with(e.what(), path + ": "), std::string("error does not name the file: ") + e.what());
  };

  refused<>([&] {
    try {
      (void)tether::load_checkpoint_meta(path);
    } catch (const CheckpointError& e) {
      names_file(e);
    }
    tether::Checkpoint ck;
    try {
      ck = tether::load_checkpoint(path);
    } catch (const CheckpointError& e) {
      names_file(e);
      return;
    }
    FUZZ_CHECK(ck.meta.is_object(), "meta is not an object");
    FUZZ_CHECK(ck.params.size() == ck.meta["params_count"].get<size_t>() &&
                   ck.momentum.size() == ck.meta["momentum_count"].get<size_t>() &&
                   ck.anchor.size() == ck.meta["anchor_count"].get<size_t>(),
               "arrays of other sizes than the header's counts");
    // The trainer's reads (Trainer::setup, evaluate_checkpoint): typed, so
    // they must not throw on a checkpoint that loaded.
    (void)ck.meta.value("step", uint64_t(0));
    (void)ck.meta.value("round", uint64_t(0));
    (void)ck.meta.value("test_acc", -1.0);
    (void)ck.meta.value("max_delta", 0.0);
    (void)ck.meta.value("cut", false);
    (void)ck.meta.value("model", std::string());
    if (ck.meta.contains("data")) (void)ck.meta["data"].dump();
    // Save and load again: the same content.
    const std::string copy = dir.path("copy.ckpt");
    tether::save_checkpoint(copy, ck);
    const tether::Checkpoint back = tether::load_checkpoint(copy);
    FUZZ_CHECK(back.meta == ck.meta, "meta changed by a save and load");
    auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    };
    FUZZ_CHECK(same_bits(back.params, ck.params) && same_bits(back.momentum, ck.momentum) &&
                   same_bits(back.anchor, ck.anchor),
               "arrays changed by a save and load");
  });
  return 0;
}
