// `tether keygen`: CURVE keypairs for a cluster (runtime/keys.h).
//   tether keygen --out DIR (--nodes N | --node K)
//   tether keygen --config CONFIG --out DIR [--set json.path=value]...
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config.h"
#include "runtime/keys.h"

namespace tether {

namespace {

const char* kKeygenHelp =
    "usage: tether keygen --out DIR (--nodes N | --node K)\n"
    "       tether keygen --config CONFIG --out DIR [--set json.path=value]...\n"
    "  writes CURVE keypairs (Z85 text): DIR/node-K.key, the secret key (mode 0600),\n"
    "  and DIR/node-K.pub, the public key. --nodes N: nodes 0..N-1; --node K: node K.\n"
    "  --config: a keypair for every entry of the config's cluster.peers (a secret key\n"
    "  already in DIR is kept), then prints the config with every peer's public_key\n"
    "  and net.secret_key_file (DIR, absolute) filled in: `tether train` takes it.\n"
    "  Each node needs only its own node-K.key: copy no other secret key to its host.\n";

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "tether: keygen: %s\n", msg.c_str());
  return code;
}

}  // namespace

int keygen_command(int argc, char** argv) {
  CLI::App app("tether keygen", "keygen");
  app.formatter_fn([](const CLI::App*, std::string, CLI::AppFormatMode) { return std::string(kKeygenHelp); });
  std::string out, config_path;
  std::vector<std::string> sets;
  int nodes = 0, node = -1;
  app.add_option("--out", out);
  CLI::Option* o_nodes = app.add_option("--nodes", nodes)->check(CLI::Range(1, 4096));
  CLI::Option* o_node = app.add_option("--node", node)->check(CLI::Range(0, 4095))->excludes(o_nodes);
  CLI::Option* o_config = app.add_option("--config", config_path)->excludes(o_nodes)->excludes(o_node);
  app.add_option("--set", sets)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(kKeygenHelp, stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    return fail(std::string(e.what()) + "\n(run `tether keygen --help` for usage)", 2);
  }
  if (out.empty()) return fail("missing --out DIR", 2);
  if (o_config->count() == 0 && o_nodes->count() == 0 && o_node->count() == 0)
    return fail("expected --nodes N, --node K or --config CONFIG", 2);
  try {
    if (o_config->count() == 0) {
      for (int id = o_node->count() ? node : 0; id < (o_node->count() ? node + 1 : nodes); ++id) {  // the asked nodes
        const NodeKeys k = write_keypair(out, id);
        std::printf("node %d public key %s\n", id, k.public_key.c_str());
      }
      return 0;
    }
    // The config as the user wrote it, checked as `tether train` would (its
    // keys aside: they are what this makes).
    std::ifstream in(config_path);
    if (!in) return fail(config_path + ": cannot read", 2);
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded()) return fail(config_path + ": not valid JSON", 2);
    for (const auto& s : sets) apply_override(doc, s);
    nlohmann::json check = doc;
    apply_override(check, "net.security=\"none\"");
    const Config cfg = parse_config(check);
    if (cfg.cluster.peers.empty()) return fail(config_path + ": cluster.peers is empty: a single node needs no keys", 2);
    const std::string dir = std::filesystem::absolute(out).lexically_normal().string();
    for (size_t i = 0; i < cfg.cluster.peers.size(); ++i) {  // i over cluster.peers, in the file's order
      const int id = cfg.cluster.peers[i].id;
      const std::string key = dir + "/node-" + std::to_string(id) + ".key";
      std::string pub;
      if (std::filesystem::exists(key)) {  // kept: checked as a node would read it
        pub = read_secret_key(key, key + " (node " + std::to_string(id) + ")").public_key;
      } else {
        pub = write_keypair(dir, id).public_key;
      }
      doc["cluster"]["peers"][i]["public_key"] = pub;
    }
    if (!doc.contains("net") || doc["net"].is_null()) doc["net"] = nlohmann::json::object();
    doc["net"]["secret_key_file"] = dir;
    parse_config(doc);  // what is printed is a valid config
    std::printf("%s\n", doc.dump(2).c_str());
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const ConfigError& e) {
    return fail(std::string("config error: ") + e.what(), 2);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
}

}  // namespace tether
