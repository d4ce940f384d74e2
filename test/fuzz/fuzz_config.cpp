// Fuzzes the config parser on the `tether config` path: load_config (the
// file read, JSON parse, --set overrides, validation), then what `tether
// config` prints: config_to_json(...).dump(2), config_peer_lines, config_get.
//
// Input: the file's text up to the first NUL byte; each NUL-separated piece
// after it is one --set override ("a.b=value"), or, starting with '?', the
// path of a --get.
// Properties checked: only ConfigError escapes, and its message names the
// file (or the --set / --get at fault); the printed config parses back to the
// same config (same config_hash, the same printed text), as `tether config`
// promises.
#include <string>
#include <vector>

#include "runtime/config.h"
#include "test/fuzz/fuzz_util.h"

using tether::ConfigError;
using tether::fuzz::refused;
using tether::fuzz::starts_with;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string text = input.substr(0, nul);
  std::vector<std::string> sets, gets;
  for (size_t at = nul; at != std::string::npos && at < input.size();) {  // the NUL-separated pieces
    const size_t next = input.find('\0', at + 1);
    const std::string piece = input.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    (!piece.empty() && piece[0] == '?' ? gets : sets).push_back(piece.empty() ? piece : piece.substr(piece[0] == '?'));
    at = next;
  }
  const std::string path = tether::fuzz::ScratchDir::get().write("config.json", text.data(), text.size());

  tether::Config cfg;
  bool ok = false;
  refused<>([&] {
    try {
      cfg = tether::load_config(path, sets);
      ok = true;
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      FUZZ_CHECK(starts_with(what, path + ": ") || starts_with(what, "--set "), "error names neither file nor --set: " + what);
    }
  });
  if (!ok) return 0;
  refused<>([&] {
    const nlohmann::json printed = tether::config_to_json(cfg);
    const std::string text1 = printed.dump(2);  // what `tether config` prints
    const tether::Config again = tether::parse_config(nlohmann::json::parse(text1));
    FUZZ_CHECK(tether::config_hash(again) == tether::config_hash(cfg), "printed config has another config_hash");
    FUZZ_CHECK(tether::config_to_json(again).dump(2) == text1, "printed config prints differently");
    (void)tether::config_peer_lines(cfg);
    for (const std::string& g : gets) {
      try {
        (void)tether::config_get(cfg, g);
      } catch (const ConfigError& e) {
        FUZZ_CHECK(starts_with(e.what(), "--get "), std::string("--get error: ") + e.what());
      }
    }
  });
  return 0;
}
