// runtime/keys: CURVE key files and `tether keygen`. Every bad key file is a
// usage error (exit 2) that names the file or the JSON path.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config.h"
#include "runtime/keys.h"
#include "test/runtime/process_util.h"

using nlohmann::json;
using tether::testing::run_command;
using tether::testing::TempDir;
using tether::testing::tether_bin;

namespace {

json two_nodes() {
  return {{"data", {{"name", "synthetic"}, {"synthetic_train", 256}, {"synthetic_test", 64}, {"batch_size", 32}}},
          {"model", {{"name", "mlp"}, {"hidden", 8}}},
          {"train", {{"max_steps", 4}, {"threads", 1}}},
          {"net", {{"connect_timeout_ms", 2000}}},
          {"cluster", {{"peers", {{{"id", 0}, {"host", "127.0.0.1"}, {"port", 5550}},
                                  {{"id", 1}, {"host", "127.0.0.1"}, {"port", 5551}}}}}}};
}

// `message` of the ConfigError that load_node_keys throws for node 0 (or "").
std::string load_error(const json& doc) {
  try {
    tether::load_node_keys(tether::parse_config(doc), 0);
  } catch (const tether::ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("keys: keygen writes a 0600 secret and its public key; load_node_keys reads them back") {
  TempDir dir("keys");
  const tether::NodeKeys k = tether::write_keypair(dir.path(), 3);   // node 1's key, under the name node-3
  struct stat st {};
  REQUIRE(::stat(dir.file("node-3.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(k.secret_key.size() == 40);
  CHECK(k.public_key.size() == 40);
  std::ifstream pub(dir.file("node-3.pub"));
  std::string line;
  std::getline(pub, line);
  CHECK(line == k.public_key);
  json doc = two_nodes();
  tether::write_keypair(dir.path(), 0);
  std::ifstream p0(dir.file("node-0.pub"));
  std::getline(p0, line);
  doc["cluster"]["peers"][0]["public_key"] = line;
  doc["cluster"]["peers"][1]["public_key"] = k.public_key;   // only node 0's own key must match its file
  doc["net"]["secret_key_file"] = dir.path();   // a directory: node-<id>.key in it
  const tether::NodeKeys back = tether::load_node_keys(tether::parse_config(doc), 0);
  CHECK(back.public_key == line);
}

TEST_CASE("keys: every bad key file or key entry is refused, naming the file or the JSON path") {
  TempDir dir("badkeys");
  const tether::NodeKeys k0 = tether::write_keypair(dir.path(), 0), k1 = tether::write_keypair(dir.path(), 1);
  json good = two_nodes();
  good["cluster"]["peers"][0]["public_key"] = k0.public_key;
  good["cluster"]["peers"][1]["public_key"] = k1.public_key;
  good["net"]["secret_key_file"] = dir.file("node-0.key");
  CHECK(load_error(good) == "");

  SUBCASE("no secret key file configured") {
    json d = good;
    d["net"].erase("secret_key_file");
    CHECK(load_error(d).rfind("net.secret_key_file: missing", 0) == 0);
  }
  SUBCASE("a peer without a public key") {
    json d = good;
    d["cluster"]["peers"][1].erase("public_key");
    CHECK(load_error(d).rfind("cluster.peers[1].public_key: missing", 0) == 0);
  }
  SUBCASE("missing file") {
    json d = good;
    d["net"]["secret_key_file"] = dir.file("nope.key");
    const std::string e = load_error(d);
    CHECK(e.find(dir.file("nope.key")) == 0);
    CHECK(e.find("No such file") != std::string::npos);
  }
  SUBCASE("a directory without node-<id>.key") {
    TempDir empty("nokeys");
    json d = good;
    d["net"]["secret_key_file"] = empty.path();
    CHECK(load_error(d).find(empty.file("node-0.key")) == 0);
  }
  SUBCASE("unreadable: not a regular file") {
    std::filesystem::create_directory(dir.file("sub"));
    std::filesystem::create_directory(dir.file("sub/node-0.key"));
    json d = good;
    d["net"]["secret_key_file"] = dir.file("sub");
    const std::string e = load_error(d);
    CHECK(e.find(dir.file("sub/node-0.key")) == 0);
    CHECK(e.find("cannot read") != std::string::npos);
  }
  SUBCASE("readable by group or others") {
    for (unsigned mode : {0640u, 0604u, 0660u}) {
      CAPTURE(mode);
      ::chmod(dir.file("node-0.key").c_str(), mode);
      const std::string e = load_error(good);
      CHECK(e.find(dir.file("node-0.key")) == 0);
      CHECK(e.find("readable by its owner alone") != std::string::npos);
    }
  }
  SUBCASE("malformed key") {
    for (const std::string& text : std::vector<std::string>{"", "short", std::string(40, '"'), k0.secret_key.substr(0, 39), k0.secret_key + "x"}) {
      CAPTURE(text);
      const std::string f = dir.file("bad.key");
      ::unlink(f.c_str());
      std::ofstream(f) << text << "\n";
      ::chmod(f.c_str(), 0600);
      json d = good;
      d["net"]["secret_key_file"] = f;
      const std::string e = load_error(d);
      CHECK(e.find(f) == 0);
      CHECK(e.find("not a CURVE secret key") != std::string::npos);
    }
  }
  SUBCASE("the config's public key does not match the secret key") {
    json d = good;
    d["cluster"]["peers"][0]["public_key"] = k1.public_key;
    const std::string e = load_error(d);
    CHECK(e.rfind("cluster.peers[0].public_key: ", 0) == 0);
    CHECK(e.find("does not match the secret key in " + dir.file("node-0.key")) != std::string::npos);
  }
  SUBCASE("a public key that is no Z85 key is a config error") {
    json d = good;
    d["cluster"]["peers"][1]["public_key"] = "not a key";
    CHECK_THROWS_WITH_AS(tether::parse_config(d), doctest::Contains("cluster.peers[1].public_key: expected a CURVE public key"),
                         tether::ConfigError);
  }
  SUBCASE("net.security") {
    json d = good;
    d["net"]["security"] = "tls";
    CHECK_THROWS_WITH_AS(tether::parse_config(d), doctest::Contains("net.security: expected one of \"curve\", \"none\""),
                         tether::ConfigError);
  }
}

TEST_CASE("keys: tether train exits 2 naming the bad key file; keygen --config fills in a config that train accepts") {
  TempDir dir("keycli");
  json doc = two_nodes();
  doc["log"] = {{"dir", dir.file("run")}, {"progress", false}};
  const std::string plain = dir.write("plain.json", doc.dump(2));
  auto no_keys = run_command(tether_bin() + " train " + plain + " --node 0", 60);
  CHECK(no_keys.exit_code == 2);
  CHECK(no_keys.output.find("net.secret_key_file: missing") != std::string::npos);

  auto gen = run_command(tether_bin() + " keygen --config " + plain + " --out " + dir.file("keys") + " 2>/dev/null", 60);
  REQUIRE(gen.exit_code == 0);
  const json filled = json::parse(gen.output);
  CHECK(filled["cluster"]["peers"][0]["public_key"].get<std::string>().size() == 40);
  CHECK(filled["net"]["secret_key_file"] == dir.file("keys"));
  const tether::Config cfg = tether::parse_config(filled);
  CHECK(tether::load_node_keys(cfg, 0).public_key == filled["cluster"]["peers"][0]["public_key"]);
  CHECK(tether::load_node_keys(cfg, 1).public_key == filled["cluster"]["peers"][1]["public_key"]);

  // Again into the same directory (a second local run): the keys there are
  // kept and read back, not made again (this exited 2 before: the kept key
  // was read through a config check that wanted every public key).
  auto again = run_command(tether_bin() + " keygen --config " + plain + " --out " + dir.file("keys") + " 2>/dev/null", 60);
  REQUIRE(again.exit_code == 0);
  const json refilled = json::parse(again.output);
  CHECK(refilled["cluster"]["peers"][0]["public_key"] == filled["cluster"]["peers"][0]["public_key"]);
  CHECK(refilled["cluster"]["peers"][1]["public_key"] == filled["cluster"]["peers"][1]["public_key"]);

  ::chmod(dir.file("keys/node-1.key").c_str(), 0644);
  const std::string keyed = dir.write("keyed.json", filled.dump(2));
  auto open_key = run_command(tether_bin() + " train " + keyed + " --node 1", 60);
  CHECK(open_key.exit_code == 2);
  CHECK(open_key.output.find(dir.file("keys/node-1.key")) != std::string::npos);
  CHECK(open_key.output.find("mode 0644") != std::string::npos);

  auto usage = run_command(tether_bin() + " keygen --out " + dir.file("k2"), 60);
  CHECK(usage.exit_code == 2);
  auto nodes = run_command(tether_bin() + " keygen --out " + dir.file("k3") + " --nodes 3", 60);
  CHECK(nodes.exit_code == 0);
  for (int i = 0; i < 3; ++i) CHECK(std::filesystem::exists(dir.file("k3/node-" + std::to_string(i) + ".key")));
  auto one = run_command(tether_bin() + " keygen --out " + dir.file("k4") + " --node 5", 60);
  CHECK(one.exit_code == 0);
  CHECK(std::filesystem::exists(dir.file("k4/node-5.pub")));
  CHECK(!std::filesystem::exists(dir.file("k4/node-0.pub")));
}
