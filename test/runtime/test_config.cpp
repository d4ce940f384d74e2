// Config validation: every key checked, errors name the JSON path.
#include <doctest/doctest.h>

#include <algorithm>
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
  CHECK(c.net.compression == "none");
}

TEST_CASE("config: net.compression takes none, bf16 or int8; anything else is refused naming the key") {
  for (const char* codec : {"none", "bf16", "int8"}) {
    Config c = tether::parse_config(json::parse(std::string(R"({"net": {"compression": ")") + codec + R"("}})"));
    CHECK(c.net.compression == codec);
  }
  CHECK(error_of(R"({"net": {"compression": "fp8"}})").find("net.compression: expected one of \"none\", \"bf16\", \"int8\"") == 0);
  CHECK(error_of(R"({"net": {"compression": 16}})").find("net.compression: expected one of") == 0);
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
      {"algorithm.name", R"({"algorithm": {"name": "downpour"}})"},
      {"algorithm.n_push", R"({"algorithm": {"n_push": 2}})"},
      {"algorithm.n_fetch", R"({"algorithm": {"n_fetch": 3}})"},
      {"algorithm.alpha", R"({"algorithm": {"alpha": 0.2}})"},
      {"algorithm.tau", R"({"algorithm": {"tau": 4}})"},
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

TEST_CASE("config: the baselines (local-sgd, downpour, easgd): keys, defaults, errors naming the path") {
  Config d = tether::parse_config(json::parse("{}"));
  CHECK(d.algorithm.n_push == 1);
  CHECK(d.algorithm.n_fetch == 1);
  CHECK(d.algorithm.alpha == 0.1);
  CHECK(d.algorithm.tau == 1);
  CHECK(d.effective_staleness() == 2);
  Config l = tether::parse_config(json::parse(R"({"algorithm": {"name": "local-sgd", "period": 4, "staleness": 3}})"));
  CHECK(l.effective_staleness() == 0);   // a blocking average every H steps
  CHECK(l.algorithm.period == 4);
  Config e = tether::parse_config(json::parse(R"({"algorithm": {"name": "easgd", "alpha": 0.25, "tau": 4}})"));
  CHECK(e.algorithm.server_based());
  CHECK(e.algorithm.alpha == 0.25);
  CHECK(e.algorithm.tau == 4);
  CHECK(!l.algorithm.server_based());
  CHECK(error_of(R"({"algorithm": {"name": "hogwild"}})").find("algorithm.name: expected one of") == 0);
  CHECK(error_of(R"({"algorithm": {"n_push": 0}})") == "algorithm.n_push: expected an integer >= 1, got 0");
  CHECK(error_of(R"({"algorithm": {"n_fetch": 1.5}})") == "algorithm.n_fetch: expected an integer >= 1, got 1.5");
  CHECK(error_of(R"({"algorithm": {"alpha": 0.7}})") == "algorithm.alpha: expected a number in [0, 0.5], got 0.7");
  CHECK(error_of(R"({"algorithm": {"tau": "2"}})") == "algorithm.tau: expected an integer >= 1, got \"2\"");
  CHECK(error_of(R"({"algorithm": {"name": "local-sgd", "mixer": "gossip"}})")
            .find("algorithm.mixer: \"local-sgd\" is a blocking ring average") == 0);
  CHECK(error_of(R"({"algorithm": {"name": "downpour", "mixer": "gossip"}})")
            .find("algorithm.mixer: \"downpour\" moves parameters through shard servers") == 0);
  CHECK(error_of(R"({"algorithm": {"name": "easgd"}, "monitor": {"bound": 3}})")
            .find("monitor.bound: \"easgd\" has no distance bound") == 0);
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

TEST_CASE("config: clocked rounds (algorithm.round_ms, period \"auto\") and train.extra_step_ms") {
  const std::string peers = R"("cluster": {"peers": [{"id": 0, "port": 1}, {"id": 1, "port": 2}]})";
  Config a = tether::parse_config(json::parse(R"({"algorithm": {"period": "auto"}})"));
  CHECK(a.algorithm.period_auto);
  CHECK(a.algorithm.period == 1);   // the starting H
  CHECK(a.algorithm.clocked_rounds());
  Config t = tether::parse_config(json::parse(R"({"algorithm": {"round_ms": 250}, "train": {"extra_step_ms": 12.5}})"));
  CHECK(t.algorithm.round_ms == 250);
  CHECK(t.train.extra_step_ms == 12.5);
  CHECK(!tether::parse_config(json::parse("{}")).algorithm.clocked_rounds());
  CHECK(error_of(R"({"algorithm": {"period": "fast"}})") ==
        "algorithm.period: expected an integer >= 1 or \"auto\", got \"fast\"");
  CHECK(error_of(R"({"algorithm": {"round_ms": -5}})") ==
        "algorithm.round_ms: expected an integer in 0..3600000 (0: every H steps), got -5");
  CHECK(error_of(R"({"train": {"extra_step_ms": -1}})") == "train.extra_step_ms: expected a number in [0, 600000], got -1");
  CHECK(error_of(R"({"algorithm": {"period": "auto", "round_ms": 100}})")
            .find("algorithm.period: \"auto\" picks a number of steps per round, algorithm.round_ms closes") == 0);
  CHECK(error_of(R"({"algorithm": {"period": 4, "round_ms": 100}})") ==
        "algorithm.period: rounds close every algorithm.round_ms (100 ms), not every H steps; leave period 1, got 4");
  CHECK(error_of(R"({"algorithm": {"name": "sync", "round_ms": 100}})") ==
        "algorithm.round_ms: rounds by time needs algorithm.name \"overlap\" (rounds in flight while computing), got "
        "\"sync\"");
  CHECK(error_of(R"({"algorithm": {"name": "easgd", "period": "auto"}})")
            .find("algorithm.period: an automatic period needs algorithm.name \"overlap\"") == 0);
  CHECK(error_of(R"({"algorithm": {"mixer": "gossip", "period": "auto"}})") ==
        "algorithm.period: an automatic period runs on the ring mixer (every node must see every node's round), got "
        "algorithm.mixer \"gossip\"");
  CHECK(error_of(R"({"algorithm": {"period": "auto", "staleness": 0}})") ==
        "algorithm.period: \"auto\" hides a merge behind s rounds of compute; it needs algorithm.staleness >= 1, got 0");
  CHECK(error_of("{" + peers + R"(, "algorithm": {"round_ms": 100}, "train": {"checkpoint_every_steps": 10}})")
            .find("train.checkpoint_every_steps: with rounds by time (algorithm.round_ms) nodes reach a step at "
                  "different rounds") == 0);
  // The run keys: "auto" and round_ms are part of what nodes agree on;
  // extra_step_ms is a node's own (one slow node).
  const auto keys = tether::config_run_keys(tether::parse_config(json::parse(R"({"algorithm": {"period": "auto"}})")));
  bool saw_auto = false, saw_extra = false;
  for (const auto& [path, value] : keys) {
    saw_auto = saw_auto || (path == "algorithm.period" && value == "\"auto\"");
    saw_extra = saw_extra || path == "train.extra_step_ms";
  }
  CHECK(saw_auto);
  CHECK(!saw_extra);
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

namespace {
// lenet declared layer by layer, every default left out.
const char* kLenetLayers = R"([
  {"type": "conv2d", "out": 32, "kernel": 5, "padding": 2}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
  {"type": "conv2d", "out": 64, "kernel": 5, "padding": 2}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
  {"type": "flatten"}, {"type": "linear", "out": 128}, {"type": "relu"}, {"type": "linear", "out": 10}])";

std::string with_layers(const std::string& layers, const std::string& rest = "") {
  return R"({"model": {"layers": )" + layers + "}" + (rest.empty() ? "" : ", " + rest) + "}";
}
// kLenetLayers with layer `index` replaced by `layer`: the list, and a config.
std::string lenet_layers_with(size_t index, const std::string& layer) {
  json list = json::parse(kLenetLayers);
  list[index] = json::parse(layer);
  return list.dump();
}
std::string lenet_with(size_t index, const std::string& layer) { return with_layers(lenet_layers_with(index, layer)); }
}  // namespace

TEST_CASE("config: model.layers declares a model; every key is checked, errors name the layer's path") {
  const Config c = tether::parse_config(json::parse(with_layers(kLenetLayers)));
  CHECK(c.model.name == "custom");
  REQUIRE(c.model.layers.size() == 10);
  CHECK(c.model.layers[0] == tether::conv2d_decl(32, 5, 1, 2));
  CHECK(c.model.layers[2] == tether::maxpool2d_decl(2, 2));   // stride: the kernel when absent
  CHECK(c.model.layers[9] == tether::linear_decl(10));
  // A residual: body and shortcut; absent, null and [] shortcuts are the identity.
  const std::string res = R"([{"type": "conv2d", "out": 4, "kernel": 3, "padding": 1},
      {"type": "residual", "layers": [{"type": "conv2d", "out": 8, "kernel": 3, "stride": 2, "padding": 1, "bias": false},
                                      {"type": "batchnorm2d", "momentum": 0.2, "eps": 1e-3}],
       "shortcut": [{"type": "avgpool2d", "kernel": 2}, {"type": "conv2d", "out": 8, "kernel": 1, "in": 4}]},
      {"type": "residual", "layers": [{"type": "relu"}], "shortcut": %S%},
      {"type": "global_avgpool"}, {"type": "flatten"}, {"type": "dropout", "p": 0.1}, {"type": "linear", "out": 10, "in": 8}])";
  for (const char* shortcut : {"null", "[]"}) {
    std::string text = res;
    text.replace(text.find("%S%"), 3, shortcut);
    const Config r = tether::parse_config(json::parse(with_layers(text)));
    REQUIRE(r.model.layers.size() == 7);
    CHECK(r.model.layers[1].layers.size() == 2);
    CHECK(r.model.layers[1].layers[1] == tether::batchnorm2d_decl(0.2, 1e-3));
    CHECK(r.model.layers[1].shortcut.size() == 2);
    CHECK(r.model.layers[1].shortcut[1].in == 4);
    CHECK(r.model.layers[2].shortcut.empty());
    CHECK(r.model.layers[5] == tether::dropout_decl(0.1));
  }

  // Bad declarations: each names the path and what was expected.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {with_layers("[]"), "model.layers: expected a non-empty array of layers, got []"},
      {with_layers(R"({"type": "relu"})"), "model.layers: expected a non-empty array of layers, got {\"type\":\"relu\"}"},
      {with_layers(R"(["relu"])"), "model.layers[0]: expected an object, got \"relu\""},
      {lenet_with(1, R"({"kind": "relu"})"),
       "model.layers[1].type: missing (expected one of \"conv2d\", \"linear\", \"relu\", \"maxpool2d\", \"avgpool2d\", "
       "\"global_avgpool\", \"batchnorm2d\", \"dropout\", \"flatten\", \"residual\")"},
      {lenet_with(0, R"({"type": "conv3d", "out": 32, "kernel": 5})"),
       "model.layers[0].type: expected one of \"conv2d\", \"linear\", \"relu\", \"maxpool2d\", \"avgpool2d\", "
       "\"global_avgpool\", \"batchnorm2d\", \"dropout\", \"flatten\", \"residual\", got \"conv3d\""},
      {lenet_with(3, R"({"type": "conv2d", "out": 64, "kernel": 5, "pading": 2})"),
       "model.layers[3].pading: unknown key (known here: bias, in, kernel, out, padding, stride, type)"},
      {lenet_with(1, R"({"type": "relu", "out": 4})"), "model.layers[1].out: unknown key (known here: type)"},
      {lenet_with(7, R"({"type": "linear", "in": 3136})"), "model.layers[7].out: missing (expected an integer in 1..1048576)"},
      {lenet_with(0, R"({"type": "conv2d", "out": 32, "kernel": "5"})"),
       "model.layers[0].kernel: expected an integer in 1..1024, got \"5\""},
      {lenet_with(2, R"({"type": "maxpool2d", "kernel": 2, "stride": 0})"),
       "model.layers[2].stride: expected an integer in 1..1024 (absent: the kernel), got 0"},
      {lenet_with(7, R"({"type": "linear", "in": 1568, "out": 128})"),
       "model.layers[7].in: expected 3136 inputs, got 1568 (the input of this layer is (3136,1,1)) "
       "[data.name \"fashion-mnist\": images (1,28,28), 10 classes]"},
      {lenet_with(9, R"({"type": "linear", "out": 100})"),
       "model.layers[9].out: expected 10 (the data set's classes: the last layer gives the logits), got 100 "
       "[data.name \"fashion-mnist\": images (1,28,28), 10 classes]"},
      {lenet_with(6, R"({"type": "relu"})"),
       "model.layers[7]: linear expects a flat input (F,1,1), got (64,7,7); add {\"type\": \"flatten\"} before it "
       "[data.name \"fashion-mnist\": images (1,28,28), 10 classes]"},
      {lenet_with(3, R"({"type": "conv2d", "out": 64, "kernel": 5, "padding": 2, "in": 1})"),
       "model.layers[3].in: expected 32 input channels, got 1 (the input of this layer is (32,14,14)) "
       "[data.name \"fashion-mnist\": images (1,28,28), 10 classes]"},
      {lenet_with(8, R"({"type": "dropout", "p": 1})"), "model.layers[8].p: expected a number in [0, 1), got 1"},
      {lenet_with(8, R"({"type": "batchnorm2d", "eps": 0})"), "model.layers[8].eps: expected a number in (0, 1], got 0"},
      {lenet_with(8, R"({"type": "residual"})"),
       "model.layers[8].layers: missing (expected a non-empty array of layers: the body)"},
      {lenet_with(4, R"({"type": "residual", "layers": [{"type": "conv2d", "out": 64, "kernel": 3, "stride": 2}]})"),
       "model.layers[4]: the body (layers) gives (64,6,6) but the shortcut (none: the identity) gives (64,14,14); they "
       "are added, so they must agree [data.name \"fashion-mnist\": images (1,28,28), 10 classes]"},
      {lenet_with(4, R"({"type": "residual", "layers": [{"type": "relu"}], "shortcut": [{"type": "flaten"}]})"),
       "model.layers[4].shortcut[0].type: expected one of \"conv2d\", \"linear\", \"relu\", \"maxpool2d\", "
       "\"avgpool2d\", \"global_avgpool\", \"batchnorm2d\", \"dropout\", \"flatten\", \"residual\", got \"flaten\""},
      {lenet_with(0, R"({"type": "conv2d", "out": 32, "kernel": 29})"),
       "model.layers[0].kernel: expected at most 28 (the input (1,28,28) with padding 0), got 29 "
       "[data.name \"fashion-mnist\": images (1,28,28), 10 classes]"},
      {R"({"model": {"name": "lenet", "layers": [{"type": "linear", "out": 10}]}})",
       "model.name: expected \"custom\" or no name with model.layers (a declared model), got \"lenet\""},
      {R"({"model": {"width": 8, "layers": [{"type": "flatten"}, {"type": "linear", "out": 10}]}})",
       "model.width: a key of the built-in models (model.name mlp, lenet, resnet), not of a declared model "
       "(model.layers): declare the layers you want instead"},
      {R"({"model": {"name": "custom"}})", "model.name: \"custom\" is a declared model: expected model.layers with it"},
      {with_layers(lenet_layers_with(7, R"({"type": "linear", "in": 3136, "out": 128})"), R"("data": {"name": "cifar10"})"),
       "model.layers[7].in: expected 4096 inputs, got 3136 (the input of this layer is (4096,1,1)) "
       "[data.name \"cifar10\": images (3,32,32), 10 classes]"},
  };
  for (const auto& [text, message] : bad) {
    CAPTURE(text);
    CHECK(error_of(text) == message);
  }
  // Nested deeper than 16 residual blocks.
  std::string deep = R"({"type": "relu"})";
  for (int i = 0; i < 17; ++i) deep = R"({"type": "residual", "layers": [)" + deep + "]}";
  CHECK(error_of(with_layers("[" + deep + R"(, {"type": "flatten"}, {"type": "linear", "out": 10}])"))
            .find("model.layers[0].layers[0].layers[0]") == 0);
  CHECK(error_of(with_layers("[" + deep + R"(, {"type": "flatten"}, {"type": "linear", "out": 10}])"))
            .find("residual blocks nested deeper than 16") != std::string::npos);
}

TEST_CASE("config: model.layers round-trips through config_to_json; run keys cover every layer") {
  const std::string lenet = with_layers(kLenetLayers);
  const Config c = tether::parse_config(json::parse(lenet));
  const json resolved = tether::config_to_json(c);
  CHECK(resolved["model"]["name"] == "custom");
  CHECK(!resolved["model"].contains("depth"));
  CHECK(resolved["model"]["layers"][0] ==
        json::parse(R"({"type": "conv2d", "out": 32, "kernel": 5, "stride": 1, "padding": 2, "bias": true, "in": null})"));
  CHECK(resolved["model"]["layers"][2] == json::parse(R"({"type": "maxpool2d", "kernel": 2, "stride": 2, "padding": 0})"));
  const Config back = tether::parse_config(resolved);
  CHECK(back.model.layers == c.model.layers);
  CHECK(tether::config_to_json(back) == resolved);
  CHECK(tether::config_hash(back) == tether::config_hash(c));
  CHECK(tether::config_get(c, "model.layers.7.out") == "128");
  CHECK(tether::config_get(c, "model.layers.7.in") == "");

  // Defaults written out are the same run; any change of a layer is another.
  CHECK(hash_of(lenet) == hash_of(lenet_with(0, R"({"type": "conv2d", "out": 32, "kernel": 5, "padding": 2,
                                                     "stride": 1, "bias": true, "in": null})")));
  CHECK(hash_of(lenet) == hash_of(lenet_with(2, R"({"type": "maxpool2d", "kernel": 2, "stride": 2})")));
  CHECK(hash_of(lenet) == hash_of(R"({"model": {"name": "custom", "layers": )" + std::string(kLenetLayers) + "}}"));
  // One run key per layer: a change names the layer.
  for (const auto& [index, layer] : std::vector<std::pair<size_t, std::string>>{
           {0, R"({"type": "conv2d", "out": 32, "kernel": 5, "padding": 2, "bias": false})"},
           {2, R"({"type": "avgpool2d", "kernel": 2})"},
           {7, R"({"type": "linear", "out": 128, "bias": false})"},
           {8, R"({"type": "dropout", "p": 0.5})"}}) {
    CAPTURE(layer);
    CHECK(diff_of(lenet, lenet_with(index, layer)) == std::vector<std::string>{"model.layers[" + std::to_string(index) + "]"});
  }
  const tether::RunKeys keys = tether::config_run_keys(c);
  const auto key = std::find_if(keys.begin(), keys.end(), [](const auto& k) { return k.first == "model.layers[7]"; });
  REQUIRE(key != keys.end());
  CHECK(key->second == R"({"bias":true,"out":128,"type":"linear"})");
  // `in` only checks: stating it is the same run.
  CHECK(hash_of(lenet) == hash_of(lenet_with(7, R"({"type": "linear", "out": 128, "in": 3136})")));
  // A layer more (or fewer): the new index is named.
  json longer = json::parse(kLenetLayers);
  longer.insert(longer.begin() + 8, json::parse(R"({"type": "dropout", "p": 0.5})"));
  CHECK(diff_of(lenet, with_layers(longer.dump())) == std::vector<std::string>{"model.layers[8]", "model.layers[9]",
                                                                               "model.layers[10]"});
  // The built-in lenet and lenet declared are different run keys: the nodes
  // of a run (and a resume) must agree on how the model was chosen.
  std::vector<std::string> names = {"model.name"};
  for (int i = 0; i < 10; ++i) names.push_back("model.layers[" + std::to_string(i) + "]");
  for (const char* k : {"model.depth", "model.width", "model.hidden", "model.dropout"}) names.push_back(k);
  CHECK(diff_of(lenet, R"({"model": {"name": "lenet"}})") == names);
  // A built-in model's run keys are those it had before model.layers existed.
  for (const auto& [path, value] : tether::config_run_keys(tether::parse_config(json::object()))) {
    CHECK(path.rfind("model.layers", 0) == std::string::npos);
  }
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
