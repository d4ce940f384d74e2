// Config validation: every key checked, errors name the JSON path.
#include <doctest/doctest.h>

#include <filesystem>

#include "models/dataset.h"
#include "runtime/config.h"
#include "runtime/trainer.h"
#include "test/runtime/process_util.h"

using tether::Config;
using tether::ConfigError;
using nlohmann::json;

namespace {
std::string error_of(const std::string& text) {
  try {
    tether::parse_config(json::parse(text));
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("config: defaults and a full single-node config") {
  Config c = tether::parse_config(json::parse(R"({
    "model": {"name": "resnet", "depth": 2, "width": 8},
    "data": {"name": "synthetic", "batch_size": 32},
    "optimizer": {"lr": 0.1, "momentum": 0.9, "nesterov": true, "weight_decay": 5e-4,
                  "schedule": "cosine", "warmup_epochs": 1},
    "train": {"epochs": 3, "seed": 7, "threads": 2},
    "log": {"dir": "runs/x", "every_steps": 10}})"));
  CHECK(c.model.name == "resnet");
  CHECK(c.model.depth == 2);
  CHECK(c.data.batch_size == 32);
  CHECK(c.optimizer.nesterov);
  CHECK(c.optimizer.schedule == "cosine");
  CHECK(c.train.seed == 7);
  CHECK(c.nodes() == 1);
  CHECK(c.device == "auto");
  CHECK(c.algorithm.staleness == 2);
}

TEST_CASE("config: errors name the path and what was expected") {
  CHECK(error_of(R"({"optimizer": {"lr": -1}})") == "optimizer.lr: expected a number > 0, got -1");
  CHECK(error_of(R"({"optimizer": {"lr": 0}})") == "optimizer.lr: expected a number > 0, got 0");
  CHECK(error_of(R"({"data": {"batch_size": "64"}})") ==
        "data.batch_size: expected an integer in 1..65536, got \"64\"");
  CHECK(error_of(R"({"data": {"batch_size": 2.5}})").find("data.batch_size: expected an integer") == 0);
  CHECK(error_of(R"({"model": {"nme": "lenet"}})").find("model.nme: unknown key") == 0);
  CHECK(error_of(R"({"modle": {}})").find("modle: unknown key") == 0);
  CHECK(error_of(R"({"model": {"name": "vgg"}})") ==
        "model.name: expected one of \"mlp\", \"lenet\", \"resnet\", got \"vgg\"");
  CHECK(error_of(R"({"model": []})") == "model: expected an object, got []");
  CHECK(error_of(R"({"optimizer": {"momentum": 1.0}})").find("optimizer.momentum: expected a number in [0, 1)") == 0);
  CHECK(error_of(R"({"train": {"nesterov": true}})").find("train.nesterov: unknown key") == 0);
  CHECK(error_of(R"({"optimizer": {"nesterov": true, "momentum": 0}})").find("optimizer.nesterov") == 0);
  CHECK(error_of(R"({"optimizer": {"schedule": "step"}})").find("optimizer.step_epochs") == 0);
  CHECK(error_of(R"({"device": "gpu0"})") == "device: expected \"auto\", \"cpu\" or \"cuda:N\", got \"gpu0\"");
  CHECK(error_of(R"({"log": {"progress": "yes"}})") == "log.progress: expected true or false, got \"yes\"");
  CHECK(error_of(R"({"monitor": {"bound": -2}})") == "monitor.bound: expected \"auto\" or a number > 0, got -2");
  CHECK(error_of(R"({"algorithm": {"mixer": "tree"}})").find("algorithm.mixer: expected one of") == 0);
  CHECK(error_of(R"({"net": {"heartbeat_ms": 500, "peer_timeout_ms": 400}})").find("net.peer_timeout_ms") == 0);
}

TEST_CASE("config: cluster peers are validated") {
  CHECK(error_of(R"({"cluster": {"peers": []}})").find("cluster.peers: expected a non-empty array") == 0);
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "h", "port": 1}, {"id": 0, "host": "h", "port": 2}]}})") ==
        "cluster.peers[1].id: duplicate id 0");
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "port": 1}, {"id": 1, "port": 1}]}})")
            .find("duplicate endpoint 127.0.0.1:1") != std::string::npos);
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "port": 1}, {"id": 2, "port": 2}]}})")
            .find("id 1 is missing") != std::string::npos);
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "port": 70000}]}})") ==
        "cluster.peers[0].port: expected an integer in 1..65535, got 70000");
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "h"}]}})").find("cluster.peers[0].port: missing") == 0);
  Config c = tether::parse_config(json::parse(
      R"({"cluster": {"peers": [{"id": 1, "host": "b", "port": 2}, {"id": 0, "host": "a", "port": 1}]}})"));
  CHECK(c.nodes() == 2);
}

TEST_CASE("config: --set overrides") {
  json doc = json::parse(R"({"optimizer": {"lr": 0.05}, "cluster": {"peers": [{"id": 0, "port": 5}]}})");
  tether::apply_override(doc, "optimizer.lr=0.1");
  tether::apply_override(doc, "data.name=synthetic");
  tether::apply_override(doc, "train.epochs=3");
  tether::apply_override(doc, "cluster.peers.0.port=6000");
  CHECK(doc["optimizer"]["lr"] == 0.1);
  CHECK(doc["data"]["name"] == "synthetic");
  CHECK(doc["train"]["epochs"] == 3);
  CHECK(doc["cluster"]["peers"][0]["port"] == 6000);
  CHECK_THROWS_WITH_AS(tether::apply_override(doc, "novalue"), "--set novalue: expected json.path=value", ConfigError);
  CHECK_THROWS_AS(tether::apply_override(doc, "cluster.peers.3.port=1"), ConfigError);
  CHECK_THROWS_AS(tether::apply_override(doc, "optimizer.lr.x=1"), ConfigError);
  Config c = tether::parse_config(doc);
  CHECK(c.optimizer.lr == doctest::Approx(0.1));
}

TEST_CASE("config: the hash covers what nodes must share and ignores the rest") {
  json a = json::parse(R"({"optimizer": {"lr": 0.05}, "log": {"dir": "x"}})");
  json b = json::parse(R"({"optimizer": {"lr": 0.05}, "log": {"dir": "y"}, "train": {"threads": 1}})");
  json c = json::parse(R"({"optimizer": {"lr": 0.06}})");
  CHECK(tether::config_hash(tether::parse_config(a)) == tether::config_hash(tether::parse_config(b)));
  CHECK(tether::config_hash(tether::parse_config(a)) != tether::config_hash(tether::parse_config(c)));
}

namespace {
uint64_t hash_of(const std::string& text) { return tether::config_hash(tether::parse_config(json::parse(text))); }
std::vector<std::string> diff_of(const std::string& a, const std::string& b) {
  return tether::config_diff(tether::parse_config(json::parse(a)), tether::parse_config(json::parse(b)));
}
}  // namespace

// The hash is over resolved values: an absent key and its default written out
// are the same run; every key that changes the number of steps or what a step
// computes is in it, keys that may differ per machine are not.
TEST_CASE("config: run keys are resolved values; the hash and the diff cover what changes the run") {
  CHECK(hash_of("{}") == hash_of(R"({"optimizer": {"lr": 0.05, "momentum": 0.9}, "train": {"max_steps": 0},
                                     "data": {"batch_size": 64}, "monitor": {"bound": "auto"}})"));
  CHECK(diff_of("{}", R"({"optimizer": {"lr": 0.05}, "data": {"name": "fashion-mnist"}})").empty());
  // Each of these changes the run: the hash changes and the diff names the path.
  const std::vector<std::pair<std::string, std::string>> changes = {
      {"model.dropout", R"({"model": {"dropout": 0.5}})"},
      {"data.name", R"({"data": {"name": "mnist"}})"},
      {"data.batch_size", R"({"data": {"batch_size": 32}})"},
      {"data.synthetic_train", R"({"data": {"synthetic_train": 100}})"},
      {"optimizer.lr", R"({"optimizer": {"lr": 5}})"},
      {"optimizer.schedule", R"({"optimizer": {"schedule": "cosine"}})"},
      {"algorithm.period", R"({"algorithm": {"period": 4}})"},
      {"monitor.bound", R"({"monitor": {"bound": 3}})"},
      {"train.epochs", R"({"train": {"epochs": 2}})"},
      {"train.seed", R"({"train": {"seed": 2}})"},
      {"train.max_steps", R"({"train": {"max_steps": 10}})"},
      {"train.compute", R"({"train": {"compute": "synthetic"}})"},
      {"train.synthetic_step_ms", R"({"train": {"synthetic_step_ms": 5}})"},
      {"train.checkpoint_every_steps", R"({"train": {"checkpoint_every_steps": 10}})"},
      {"cluster.peers", R"({"cluster": {"peers": [{"id": 0, "port": 5000}]}})"},
  };
  for (const auto& [path, doc] : changes) {
    CAPTURE(path);
    CHECK(hash_of(doc) != hash_of("{}"));
    CHECK(diff_of("{}", doc) == std::vector<std::string>{path});
  }
  // Keys that may differ between machines or runs.
  CHECK(hash_of("{}") == hash_of(R"({"device": "cpu", "log": {"dir": "elsewhere", "every_steps": 3},
      "data": {"path": "/mnt/data"}, "train": {"threads": 3, "checkpoint": "x.ckpt", "tf32": true,
      "eval_every_epochs": 2}, "monitor": {"snapshots": true, "snapshot_every": 4},
      "net": {"chunk_bytes": 4096, "peer_timeout_ms": 9000}})"));
  // Peers by id, whatever their order in the file; ssh fields do not count.
  CHECK(hash_of(R"({"cluster": {"peers": [{"id": 0, "host": "a", "port": 1}, {"id": 1, "host": "b", "port": 2}]}})") ==
        hash_of(R"({"cluster": {"peers": [{"id": 1, "host": "b", "port": 2, "ssh_user": "u"},
                                          {"id": 0, "host": "a", "port": 1}]}})"));
  CHECK(diff_of(R"({"optimizer": {"lr": 0.1}, "train": {"epochs": 3}})", R"({"optimizer": {"lr": 0.2}})") ==
        std::vector<std::string>{"optimizer.lr", "train.epochs"});
  CHECK(tether::run_keys_diff({{"a", "1"}, {"b", "2"}}, {{"b", "2"}, {"c", "3"}}) ==
        std::vector<std::string>{"a", "c"});
}

// Every node of a cluster config writes its own checkpoint file, also when
// train.checkpoint names one: nodes sharing a file system must not overwrite
// each other's.
TEST_CASE("config: checkpoint paths are per node in a cluster config") {
  const std::string peers = R"("cluster": {"peers": [{"id": 0, "port": 5000}, {"id": 1, "port": 5001}]})";
  auto path = [](const std::string& text, int node) {
    return tether::checkpoint_path_for_node(tether::parse_config(json::parse(text)), node);
  };
  CHECK(path(R"({"log": {"dir": "runs/x"}})", 0) == "runs/x/node-0.ckpt");
  CHECK(path(R"({"train": {"checkpoint": "ckpt/x.ckpt"}})", 0) == "ckpt/x.ckpt");
  CHECK(path("{" + peers + R"(, "log": {"dir": "runs/x"}})", 1) == "runs/x/node-1.ckpt");
  CHECK(path("{" + peers + R"(, "train": {"checkpoint": "ckpt/x.ckpt"}})", 0) == "ckpt/x.node-0.ckpt");
  CHECK(path("{" + peers + R"(, "train": {"checkpoint": "ckpt/x.ckpt"}})", 1) == "ckpt/x.node-1.ckpt");
  CHECK(path("{" + peers + R"(, "train": {"checkpoint": "/abs/d.v2/x"}})", 1) == "/abs/d.v2/x.node-1");
  CHECK(path("{" + peers + R"(, "train": {"checkpoint": "x.tar.ckpt"}})", 1) == "x.tar.node-1.ckpt");
  CHECK(path("{" + peers + R"(, "train": {"checkpoint": "ckpt/"}})", 1) == "ckpt/node-1.ckpt");
}

TEST_CASE("config: gossip has no proven bound; cluster checkpoints fall on round boundaries") {
  const std::string peers = R"("cluster": {"peers": [{"id": 0, "port": 1}, {"id": 1, "port": 2}]})";
  CHECK(error_of(R"({"algorithm": {"mixer": "gossip"}, "monitor": {"bound": 3}})").find("monitor.bound: the gossip mixer "
                                                                                         "has no proven distance bound") == 0);
  CHECK(error_of(R"({"algorithm": {"mixer": "gossip"}, "monitor": {"bound": "auto"}})").empty());
  CHECK(error_of(R"({"algorithm": {"mixer": "ring"}, "monitor": {"bound": 3}})").empty());
  CHECK(error_of("{" + peers + R"(, "algorithm": {"period": 4}, "train": {"checkpoint_every_steps": 10}})") ==
        "train.checkpoint_every_steps: expected a multiple of algorithm.period (4) in a cluster, so that every node "
        "checkpoints at the same round boundary, got 10");
  CHECK(error_of("{" + peers + R"(, "algorithm": {"period": 4}, "train": {"checkpoint_every_steps": 12}})").empty());
  CHECK(error_of(R"({"algorithm": {"period": 4}, "train": {"checkpoint_every_steps": 10}})").empty());   // one node
}

TEST_CASE("config: data.path absent means the data set's default directory, so data.name alone switches") {
  CHECK(tether::parse_config(json::parse("{}")).data.path.empty());
  auto dir_of = [](const Config& c) { return tether::dataset_dir(tether::dataset_spec(c)); };
  CHECK(dir_of(tether::parse_config(json::parse("{}"))) == std::string(tether::kFashionMnistDefaultPath));
  CHECK(dir_of(tether::parse_config(json::parse(R"({"data": {"name": "mnist"}})"))) ==
        std::string(tether::kMnistDefaultPath));
  CHECK(dir_of(tether::parse_config(json::parse(R"({"data": {"name": "cifar10"}})"))) ==
        std::string(tether::kCifar10DefaultPath));
  CHECK(dir_of(tether::parse_config(json::parse(R"({"data": {"name": "synthetic"}})"))).empty());
  CHECK(dir_of(tether::parse_config(json::parse(R"({"data": {"name": "mnist", "path": "/d"}})"))) == "/d");
  CHECK(error_of(R"({"data": {"path": ""}})") == "data.path: expected a non-empty string or null, got \"\"");
  // Every shipped config: --set data.name alone reads that set's default
  // directory (only a config that needs another directory names one).
  for (const char* name : {"fmnist-lenet", "fmnist-resnet", "local-4", "ssh-3", "switch-4"}) {
    CAPTURE(name);
    const std::string file = tether::testing::source_root() + "/configs/" + name + ".json";
    CHECK(dir_of(tether::load_config(file, {})) == std::string(tether::kFashionMnistDefaultPath));
    CHECK(dir_of(tether::load_config(file, {"data.name=mnist"})) == std::string(tether::kMnistDefaultPath));
    CHECK(dir_of(tether::load_config(file, {"data.name=cifar10"})) == std::string(tether::kCifar10DefaultPath));
  }
}

namespace {
// Every leaf of `doc` as (dotted path, value); array elements by index.
void leaves(const json& doc, const std::string& path, std::vector<std::pair<std::string, json>>& out) {
  if (doc.is_object() || doc.is_array()) {
    size_t i = 0;
    for (auto it = doc.begin(); it != doc.end(); ++it, ++i) {
      std::string key = doc.is_object() ? it.key() : std::to_string(i);
      leaves(*it, path.empty() ? key : path + "." + key, out);
    }
  } else {
    out.emplace_back(path, doc);
  }
}
}  // namespace

// config_to_json: every key with its resolved value; parse_config reads it
// back to the same Config (same hash, same JSON again).
TEST_CASE("config: config_to_json round-trips through parse_config") {
  std::vector<std::string> texts = {
      "{}",
      R"({"device": "cpu", "model": {"name": "mlp", "hidden": 16, "dropout": 0.25},
          "data": {"name": "synthetic", "path": "/d", "batch_size": 8, "synthetic_train": 100, "synthetic_test": 10},
          "optimizer": {"lr": 1, "momentum": 0.5, "nesterov": true, "schedule": "step", "step_epochs": 2.5,
                        "gamma": 0.5, "scale_lr": true, "min_lr": 1e-5, "warmup_epochs": 0.5, "weight_decay": 1e-4},
          "train": {"epochs": 3, "seed": 9007199254740993, "threads": 2, "max_steps": 40, "eval_every_epochs": 0,
                    "checkpoint_every_steps": 8, "checkpoint": "ck/x.ckpt", "tf32": true,
                    "compute": "synthetic", "synthetic_step_ms": 12.5},
          "log": {"dir": "runs/rt", "every_steps": 3, "progress": false},
          "cluster": {"peers": [{"id": 1, "host": "b.example", "port": 2, "ssh_user": "bob", "ssh_port": 2222,
                                 "workdir": "/w d"},
                                {"id": 0, "host": "::1", "port": 1}]},
          "algorithm": {"name": "sync", "staleness": 3, "period": 4, "mixer": "ring"},
          "monitor": {"bound": 2.5, "sketch_buckets": 64, "snapshots": true, "snapshot_every": 5},
          "net": {"connect_timeout_ms": 1000, "heartbeat_ms": 50, "peer_timeout_ms": 500, "shutdown_timeout_ms": 700,
                  "chunk_bytes": 4096, "inject_delay_ms": 1.5, "inject_rate_mbps": 100}})",
      R"({"algorithm": {"mixer": "gossip"}, "monitor": {"bound": "auto"}})",
  };
  for (const auto& text : texts) {
    CAPTURE(text);
    const Config c = tether::parse_config(json::parse(text));
    const json resolved = tether::config_to_json(c);
    const Config back = tether::parse_config(resolved);
    CHECK(tether::config_hash(back) == tether::config_hash(c));
    CHECK(tether::config_to_json(back) == resolved);
    CHECK(tether::checkpoint_path_for_node(back, 1) == tether::checkpoint_path_for_node(c, 1));
    CHECK(back.cluster.peers.size() == c.cluster.peers.size());
    for (size_t i = 0; i < c.cluster.peers.size(); ++i) {
      CHECK(back.cluster.peers[i].ssh_user == c.cluster.peers[i].ssh_user);
      CHECK(back.cluster.peers[i].ssh_port == c.cluster.peers[i].ssh_port);
      CHECK(back.cluster.peers[i].workdir == c.cluster.peers[i].workdir);
    }
    // Every key the file set appears, resolved, at its own path.
    std::vector<std::pair<std::string, json>> given;
    leaves(json::parse(text), "", given);
    for (const auto& [path, value] : given) {
      CAPTURE(path);
      const std::string got = tether::config_get(c, path);
      if (value.is_number()) {
        CHECK(std::stod(got) == value.get<double>());
      } else {
        CHECK(got == (value.is_string() ? value.get<std::string>() : value.dump()));
      }
    }
  }
  // The defaults: every section, unset keys null, the bound "auto".
  const json d = tether::config_to_json(tether::parse_config(json::object()));
  for (const char* section : {"model", "data", "optimizer", "train", "log", "cluster", "algorithm", "monitor", "net"}) {
    CHECK(d.at(section).is_object());
  }
  CHECK(d.at("data").at("path").is_null());
  CHECK(d.at("train").at("checkpoint").is_null());
  CHECK(d.at("cluster").at("peers").is_null());
  CHECK(d.at("monitor").at("bound") == "auto");
  CHECK(d.at("optimizer").at("momentum") == 0.9);
  CHECK(d.at("log").at("dir") == "runs/default");
}

TEST_CASE("config: every shipped config resolves to itself plus defaults") {
  for (const auto& entry : std::filesystem::directory_iterator(tether::testing::source_root() + "/configs")) {
    if (entry.path().extension() != ".json") continue;
    CAPTURE(entry.path().string());
    const Config c = tether::load_config(entry.path().string(), {});
    std::vector<std::pair<std::string, json>> given;
    leaves(c.raw, "", given);
    for (const auto& [path, value] : given) {
      CAPTURE(path);
      const std::string got = tether::config_get(c, path);
      if (value.is_number()) {
        CHECK(std::stod(got) == value.get<double>());
      } else {
        CHECK(got == (value.is_string() ? value.get<std::string>() : value.dump()));
      }
    }
    CHECK(tether::config_hash(tether::parse_config(tether::config_to_json(c))) == tether::config_hash(c));
  }
}

TEST_CASE("config: config_peer_lines and config_get") {
  const Config c = tether::parse_config(json::parse(R"({"cluster": {"peers": [
      {"id": 2, "host": "10.0.0.3", "port": 5552, "workdir": "/srv/my runs"},
      {"id": 0, "host": "a.example", "port": 5550, "ssh_user": "alice", "ssh_port": 2200},
      {"id": 1, "host": "[::1]", "port": 5551}]}})"));
  // The config's order (line k = cluster.peers.k); "-" for unset; workdir last.
  CHECK(tether::config_peer_lines(c) ==
        "2 10.0.0.3 5552 22 - /srv/my runs\n"
        "0 a.example 5550 2200 alice -\n"
        "1 [::1] 5551 22 - -\n");
  CHECK(tether::config_peer_lines(tether::parse_config(json::object())).empty());
  CHECK(tether::config_get(c, "cluster.peers.1.ssh_user") == "alice");
  CHECK(tether::config_get(c, "cluster.peers.0.port") == "5552");
  CHECK(tether::config_get(c, "cluster.peers.2.ssh_user").empty());   // null
  CHECK(tether::config_get(c, "log.progress") == "true");
  CHECK(tether::config_get(c, "optimizer.lr") == "0.05");
  CHECK(tether::config_get(c, "monitor.bound") == "auto");
  auto error = [&](const std::string& path) {
    try {
      tether::config_get(c, path);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(error("model") == "--get model: expected the path of one value (e.g. log.dir, cluster.peers.0.host), got an object");
  CHECK(error("cluster.peers").find("got an array") != std::string::npos);
  CHECK(error("model.nmae").find("model.nmae: no such key (known here: depth, dropout, hidden, name, width)") !=
        std::string::npos);
  CHECK(error("cluster.peers.3.host").find("cluster.peers.3: expected an index in 0..2") != std::string::npos);
  CHECK(error("log.dir.x").find("no such key (log.dir is a single value)") != std::string::npos);
}

TEST_CASE("config: peer fields the launchers use are checked; null means unset") {
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "a b", "port": 1}]}})") ==
        "cluster.peers[0].host: expected a host name or address, got \"a b\"");
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "-oProxyCommand=x", "port": 1}]}})")
            .find("cluster.peers[0].host: expected a host name or address") == 0);
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "h", "port": 1, "ssh_user": "a;b"}]}})")
            .find("cluster.peers[0].ssh_user: expected a login name") == 0);
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "h", "port": 1, "ssh_user": "-l"}]}})")
            .find("cluster.peers[0].ssh_user: expected a login name") == 0);
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "h", "port": 1, "workdir": "-"}]}})")
            .find("cluster.peers[0].workdir: expected a directory") == 0);
  CHECK(error_of(R"({"cluster": {"peers": [{"id": 0, "host": "h", "port": 1, "workdir": "a\nb"}]}})")
            .find("cluster.peers[0].workdir: expected a directory") == 0);
  CHECK(error_of(R"({"data": {"path": null}, "train": {"checkpoint": null}, "cluster": {"peers": null}})").empty());
  CHECK(error_of(R"({"cluster": {"peers": []}})").find("cluster.peers: expected a non-empty array") == 0);
  // null only where config_to_json writes it
  CHECK(error_of(R"({"optimizer": {"lr": null}})") == "optimizer.lr: expected a number > 0, got null");
}

// Found by fuzzing (test/fuzz/fuzz_config.cpp): both aborted `tether config`
// and `tether train` with an uncaught JSON library exception (exit 134)
// instead of a config error naming the culprit (exit 2).
TEST_CASE("config: --set text that is not UTF-8, and a number beyond a double, are config errors") {
  auto set_error = [](const std::string& assignment) {
    json doc = json::object();
    try {
      tether::apply_override(doc, assignment);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // a bare word is taken as a string: it must be UTF-8 to be JSON
  CHECK(set_error("device=\xff") == "--set \"device=\xef\xbf\xbd\": not valid UTF-8 text");
  CHECK(set_error("log.dir=runs/\xc3") == "--set \"log.dir=runs/\xef\xbf\xbd\": not valid UTF-8 text");
  CHECK(set_error("mod\xfe.name=mlp") == "--set \"mod\xef\xbf\xbd.name=mlp\": not valid UTF-8 text");
  CHECK(set_error("log.dir=runs/caf\xc3\xa9").empty());  // UTF-8 is fine
  tether::testing::TempDir dir("config");
  const std::string path = dir.write("big.json", R"({"optimizer": {"lr": 1e400}})");
  std::string what;
  try {
    tether::load_config(path, {});
  } catch (const ConfigError& e) {
    what = e.what();
  }
  CHECK(what == path + ": not valid JSON: number overflow parsing '1e400'");
  // through the binary: exit 2 and the message, not an abort
  const std::string good = dir.write("good.json", "{}");
  const auto r = tether::testing::run_command(
      tether::testing::tether_bin() + " config " + good + " --set \"$(printf 'device=\\377')\"", 60);
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("tether: config error: --set ") != std::string::npos);
  CHECK(tether::testing::run_command(tether::testing::tether_bin() + " config " + path, 60).exit_code == 2);
}
