// The tether binary on bad input: each case names what is wrong and exits
// with the documented code (2: usage, config, data, checkpoint).
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <fstream>
#include <sstream>
#include <vector>

#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "test/runtime/process_util.h"

using tether::testing::run_command;
using tether::testing::TempDir;
using tether::testing::tether_bin;

namespace {

void put_be32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(char((v >> (8 * i)) & 0xff));
}
std::string idx_images(uint32_t count, uint32_t rows, uint32_t cols, size_t payload) {
  std::string s;
  put_be32(s, 0x00000803);
  put_be32(s, count);
  put_be32(s, rows);
  put_be32(s, cols);
  s.append(payload, char(7));
  return s;
}
std::string idx_labels(uint32_t count, size_t payload, char value = 3) {
  std::string s;
  put_be32(s, 0x00000801);
  put_be32(s, count);
  s.append(payload, value);
  return s;
}

// A data directory of Fashion-MNIST layout (plain IDX) with 100 train and
// 20 test images; `mutate` may break one file.
std::string data_dir(const TempDir& dir, const std::string& train_images, const std::string& train_labels) {
  dir.write("train-images-idx3-ubyte", train_images);
  dir.write("train-labels-idx1-ubyte", train_labels);
  dir.write("t10k-images-idx3-ubyte", idx_images(20, 28, 28, 20 * 784));
  dir.write("t10k-labels-idx1-ubyte", idx_labels(20, 20));
  return dir.path();
}

struct Case {
  std::string name, args;
  int code;
  std::string message;
};

void expect(const Case& c) {
  auto r = run_command(tether_bin() + " " + c.args, 60);
  CAPTURE(c.name);
  CAPTURE(r.output);
  CHECK(r.exit_code == c.code);
  CHECK(r.output.find(c.message) != std::string::npos);
}

}  // namespace

TEST_CASE("cli: help and usage errors") {
  auto help = run_command(tether_bin() + " --help");
  CHECK(help.exit_code == 0);
  CHECK(help.output.find("tether train CONFIG") != std::string::npos);
  expect({"no command", "", 2, "missing command"});
  expect({"unknown command", "fly cfg.json", 2, "unknown command \"fly\""});
  expect({"missing config", "train", 2, "train: missing CONFIG"});
  expect({"bad node", "train x.json --node abc", 2, "--node: expected an integer >= 0, got abc"});
  expect({"unknown option", "train x.json --fast", 2, "unknown option --fast"});
  expect({"eval without checkpoint", "eval x.json", 2, "eval: missing --checkpoint FILE"});
  // --crash-at, a hidden test hook (not in --help): one of the communicator's points.
  const std::string points = "POINT or POINT:ROUND, POINT one of submit, reduce-scatter, all-gather, gossip-half, "
                             "commit, state, corrupt-state, window, cut-answer, cut-decide, got ";
  expect({"unknown crash point", "train x.json --crash-at nowhere", 2, "--crash-at: expected " + points + "nowhere"});
  expect({"bad crash round", "train x.json --crash-at commit:two", 2, "--crash-at: expected " + points + "commit:two"});
  expect({"empty crash point", "train x.json --crash-at :3", 2, "--crash-at: expected " + points + ":3"});
  CHECK(run_command(tether_bin() + " train --help").output.find("--crash-at") == std::string::npos);
}

TEST_CASE("cli: bad configs name the file, the JSON path and what was expected") {
  TempDir dir("cli");
  auto cfg = [&](const std::string& name, const std::string& text) { return dir.write(name, text); };
  expect({"missing file", "train " + dir.file("absent.json"), 2, "absent.json: cannot open config file"});
  expect({"not json", "train " + cfg("broken.json", "{\"model\": {\"name\": \"lenet\",}"), 2,
          "broken.json: not valid JSON"});
  expect({"array at top", "train " + cfg("array.json", "[1, 2]"), 2, "expected a JSON object at the top level"});
  expect({"negative lr", "train " + cfg("lr.json", R"({"optimizer": {"lr": -1}})"), 2,
          "optimizer.lr: expected a number > 0, got -1"});
  expect({"unknown key", "train " + cfg("key.json", R"({"model": {"nmae": "lenet"}})"), 2,
          "model.nmae: unknown key"});
  expect({"wrong type", "train " + cfg("type.json", R"({"data": {"batch_size": "64"}})"), 2,
          "data.batch_size: expected an integer in 1..65536, got \"64\""});
  expect({"bad override", "train " + cfg("ok.json", "{}") + " --set optimizer.lr=-3", 2,
          "optimizer.lr: expected a number > 0, got -3"});
  expect({"node outside cluster", "train " + cfg("one.json", R"({"data": {"name": "synthetic"}})") + " --node 3", 2,
          "--node 3: the config has nodes 0..0"});
  expect({"bad device", "train " + cfg("dev.json", R"({"device": "tpu"})"), 2,
          "device: expected \"auto\", \"cpu\" or \"cuda:N\", got \"tpu\""});
}

TEST_CASE("cli: bad data files name the file and the problem") {
  struct DataCase {
    std::string name, images, labels, message;
  };
  std::vector<DataCase> cases = {
      {"truncated images", idx_images(100, 28, 28, 100 * 784 - 500), idx_labels(100, 100),
       "train-images-idx3-ubyte: truncated"},
      {"corrupt header", std::string("\x00\x00\x09\x03", 4) + idx_images(100, 28, 28, 100 * 784).substr(4),
       idx_labels(100, 100), "train-images-idx3-ubyte"},
      {"wrong label count", idx_images(100, 28, 28, 100 * 784), idx_labels(99, 99),
       "99 labels but 100 images"},
      {"label out of range", idx_images(100, 28, 28, 100 * 784), idx_labels(100, 100, 12),
       "train-labels-idx1-ubyte"},
      {"empty labels file", idx_images(100, 28, 28, 100 * 784), "", "train-labels-idx1-ubyte"},
  };
  for (const auto& c : cases) {
    TempDir dir("clidata");
    std::string path = data_dir(dir, c.images, c.labels);
    std::string cfg = dir.write("cfg.json", R"({"data": {"name": "fashion-mnist", "path": ")" + path +
                                                R"("}, "log": {"dir": ")" + dir.file("log") + R"("}})");
    expect({c.name, "train " + cfg, 2, c.message});
  }
  TempDir dir("clidata");
  std::string cfg = dir.write("cfg.json", R"({"data": {"name": "fashion-mnist", "path": ")" + dir.file("nowhere") +
                                              R"("}, "log": {"dir": ")" + dir.file("log") + R"("}})");
  expect({"missing data dir", "train " + cfg, 2, "nowhere"});
}

TEST_CASE("cli: bad checkpoints are refused by eval and --resume") {
  TempDir dir("click");
  std::string cfg = dir.write("cfg.json", R"({"model": {"name": "mlp", "hidden": 16},
      "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 64, "batch_size": 32},
      "train": {"epochs": 1, "threads": 1}, "log": {"dir": ")" + dir.file("log") + R"(", "progress": false}})");
  auto ok = run_command(tether_bin() + " train " + cfg, 120);
  REQUIRE(ok.exit_code == 0);
  std::string ck = dir.file("log/node-0.ckpt");
  auto ev = run_command(tether_bin() + " eval " + cfg + " --checkpoint " + ck);
  CHECK(ev.exit_code == 0);
  CHECK(ev.output.find("test_acc") != std::string::npos);

  std::string bytes;
  {
    std::ifstream in(ck, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  }
  std::string corrupt = bytes;
  corrupt[corrupt.size() / 2] ^= 1;
  std::string bad = dir.write("bad.ckpt", corrupt);
  expect({"corrupt checkpoint", "eval " + cfg + " --checkpoint " + bad, 2, "bad.ckpt: checksum mismatch"});
  std::string cut = dir.write("cut.ckpt", bytes.substr(0, bytes.size() / 3));
  expect({"truncated checkpoint resume", "train " + cfg + " --resume " + cut, 2, "cut.ckpt: checksum mismatch"});
  expect({"checkpoint of another model", "eval " + cfg + " --set model.hidden=32 --checkpoint " + ck, 2,
          "the config builds mlp"});
}

// --resume under a config whose run keys differ from the checkpoint's (50x the
// learning rate, another data set) must be refused, naming each key with both
// values; keys that do not change the run may differ. A checkpoint without
// run_config (written before they existed) is compared by its config_hash.
TEST_CASE("cli: --resume refuses a config that changes the run, naming the keys") {
  TempDir dir("cliresume");
  std::string cfg = dir.write("cfg.json", R"({"model": {"name": "mlp", "hidden": 16},
      "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 64, "batch_size": 32},
      "train": {"epochs": 2, "threads": 1}, "log": {"dir": ")" + dir.file("log") + R"(", "progress": false}})");
  auto first = run_command(tether_bin() + " train " + cfg + " --set train.max_steps=3", 120);
  REQUIRE(first.exit_code == 0);
  std::string ck = dir.file("log/node-0.ckpt");
  std::string ck_copy = dir.file("copy.ckpt");
  std::filesystem::copy_file(ck, ck_copy);

  auto r = run_command(tether_bin() + " train " + cfg + " --resume " + ck +
                       " --set optimizer.lr=5 --set data.name=mnist", 120);
  CAPTURE(r.output);
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("checkpoint error: " + ck + ": was written by a run with") != std::string::npos);
  CHECK(r.output.find("data.name=\"synthetic\", optimizer.lr=0.05; this run has data.name=\"mnist\", optimizer.lr=5") !=
        std::string::npos);
  CHECK(r.output.find("keys that may change") != std::string::npos);
  expect({"other epochs", "train " + cfg + " --resume " + ck + " --set train.epochs=3", 2,
          "with train.epochs=2; this run has train.epochs=3"});

  // Allowed: where to stop, threads, logging, and an explicit default value.
  auto ok = run_command(tether_bin() + " train " + cfg + " --resume " + ck +
                        " --set train.max_steps=5 --set train.threads=2 --set log.every_steps=7 --set optimizer.lr=0.05",
                        120);
  CAPTURE(ok.output);
  CHECK(ok.exit_code == 0);

  // An older checkpoint: no run_config, the config_hash of its day.
  tether::Checkpoint old = tether::load_checkpoint(ck_copy);
  REQUIRE(old.meta.contains("run_config"));
  old.meta.erase("run_config");
  old.meta["config_hash"] = tether::legacy_config_hash(tether::load_config(cfg, {}));
  tether::save_checkpoint(ck_copy, old);
  expect({"old checkpoint, other config", "train " + cfg + " --resume " + ck_copy + " --set optimizer.lr=5", 2,
          "copy.ckpt: was written by a run with another config"});
  auto old_ok = run_command(tether_bin() + " train " + cfg + " --resume " + ck_copy + " --set train.max_steps=5", 120);
  CAPTURE(old_ok.output);
  CHECK(old_ok.exit_code == 0);
}

// `tether checkpoint FILE`: the header of a verified checkpoint, whole or by
// key (what scripts/local-cluster.sh CONFIG resume reads); --resume of a
// checkpoint written by a cluster of another size is refused naming the file.
TEST_CASE("cli: checkpoint prints a checkpoint's header, --get one line per key; --resume refuses another cluster size") {
  TempDir dir("cli-ckpt");
  std::string cfg = dir.write("cfg.json", R"({"model": {"name": "mlp", "hidden": 16},
      "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 64, "batch_size": 32},
      "train": {"epochs": 1, "threads": 1, "max_steps": 3}, "log": {"dir": ")" + dir.file("log") + R"(", "progress": false}})");
  REQUIRE(run_command(tether_bin() + " train " + cfg, 120).exit_code == 0);
  const std::string ck = dir.file("log/node-0.ckpt");

  auto whole = run_command(tether_bin() + " checkpoint " + ck + " 2>/dev/null");
  CAPTURE(whole.output);
  CHECK(whole.exit_code == 0);
  const nlohmann::json meta = nlohmann::json::parse(whole.output, nullptr, false);
  REQUIRE(meta.is_object());
  CHECK(meta == tether::load_checkpoint(ck).meta);
  CHECK(meta.value("step", 0) == 3);

  // In order, one line each: string bare, number, an absent key empty, an object as one line of JSON.
  auto keys = run_command(tether_bin() + " checkpoint " + ck + " --get model --get step --get cut --get node --get rng");
  CAPTURE(keys.output);
  CHECK(keys.exit_code == 0);
  CHECK(keys.output == "mlp\n3\n\n0\n" + meta["rng"].dump() + "\n");

  expect({"no file", "checkpoint", 2, "checkpoint: missing FILE"});
  expect({"absent file", "checkpoint " + dir.file("none.ckpt") + " --get step", 2,
          "checkpoint error: " + dir.file("none.ckpt") + ": cannot open checkpoint"});
  std::string bytes;
  {
    std::ifstream in(ck, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  }
  bytes[bytes.size() - 5] ^= 1;
  const std::string bad = dir.write("bad.ckpt", bytes);
  expect({"corrupt file", "checkpoint " + bad + " --get step", 2, "bad.ckpt: checksum mismatch"});

  // Written by node 1 of a 2-node cluster: this single-node run refuses it.
  tether::Checkpoint two = tether::load_checkpoint(ck);
  two.meta["nodes"] = 2;
  two.meta["node"] = 1;
  const std::string other = dir.file("two.ckpt");
  tether::save_checkpoint(other, two);
  expect({"another cluster size", "train " + cfg + " --resume " + other, 2,
          "checkpoint error: " + other + ": nodes is 2, this run needs 1"});
  two.meta["nodes"] = 1;   // node 1 of a 1-node cluster: no such node
  tether::save_checkpoint(other, two);
  expect({"node outside the cluster", "train " + cfg + " --resume " + other, 2,
          other + ": node is 1, this run needs one of its nodes 0..0"});
}

TEST_CASE("cli: eval refuses a checkpoint of another data set, naming both, unless --any-data") {
  TempDir dir("clidata-eval");
  // Trained on synthetic (28x28x1, like MNIST): the same model fits both.
  std::string cfg = dir.write("cfg.json", R"({"model": {"name": "mlp", "hidden": 16},
      "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 64, "batch_size": 32},
      "train": {"epochs": 1, "threads": 1}, "log": {"dir": ")" + dir.file("log") + R"(", "progress": false}})");
  auto ok = run_command(tether_bin() + " train " + cfg, 120);
  REQUIRE(ok.exit_code == 0);
  std::string ck = dir.file("log/node-0.ckpt");
  // An MNIST-layout directory of 100 + 20 images for the other data set.
  TempDir data("clidata-mnist");
  std::string mnist = data_dir(data, idx_images(100, 28, 28, 100 * 784), idx_labels(100, 100));
  const std::string other = " --set data.name=mnist --set data.path=" + mnist;

  auto same = run_command(tether_bin() + " eval " + cfg + " --checkpoint " + ck, 60);
  CHECK(same.exit_code == 0);
  expect({"eval on another data set", "eval " + cfg + other + " --checkpoint " + ck, 2,
          "node-0.ckpt: trained on data set \"synthetic\", the config's data.name is \"mnist\""});
  expect({"eval on another data set: the way out", "eval " + cfg + other + " --checkpoint " + ck, 2, "--any-data"});
  auto forced = run_command(tether_bin() + " eval " + cfg + other + " --any-data --checkpoint " + ck, 60);
  CAPTURE(forced.output);
  CHECK(forced.exit_code == 0);
  CHECK(forced.output.find("\"event\": \"eval\"") != std::string::npos);
  // --any-data is eval's, documented in --help.
  expect({"--any-data is eval's only", "train " + cfg + " --any-data", 2, "unknown option --any-data for train"});
  auto help = run_command(tether_bin() + " --help");
  CHECK(help.output.find("--any-data") != std::string::npos);
}

TEST_CASE("cli: data.name alone switches data sets; the start-up line names the directory read") {
  TempDir dir("clidata-name");
  const std::string shipped = tether::testing::source_root() + "/configs/fmnist-lenet.json";
  // A cheap run of the shipped Fashion-MNIST config: mlp, one step.
  const std::string cheap = " --set model.name=mlp --set model.hidden=16 --set train.max_steps=1"
                            " --set train.threads=1 --set log.progress=false --set log.dir=" + dir.file("log");
  // MNIST's default directory is read, not the Fashion-MNIST one the shipped
  // config used to name: either the start-up line says so (MNIST installed)
  // or the data error names its files (not installed); exit 0 or 2.
  auto mnist = run_command(tether_bin() + " train " + shipped + cheap + " --set data.name=mnist", 120);
  CAPTURE(mnist.output);
  CHECK((mnist.exit_code == 0 || mnist.exit_code == 2));
  const bool read = mnist.output.find("data mnist from /usr/share/datasets/mnist (") != std::string::npos;
  const bool missing = mnist.output.find("data error: /usr/share/datasets/mnist/t") !=
                       std::string::npos;
  CHECK((read || missing));
  CHECK(mnist.output.find("fashion-mnist") == std::string::npos);

  auto synth = run_command(tether_bin() + " train " + shipped + cheap +
                               " --set data.name=synthetic --set data.synthetic_train=64 --set data.synthetic_test=16",
                           120);
  CAPTURE(synth.output);
  CHECK(synth.exit_code == 0);
  CHECK(synth.output.find("data synthetic (generated, seed 1) (64 train / 16 test)") != std::string::npos);

  // A data.path the config sets is what is read, and the line says so.
  TempDir data("clidata-path");
  std::string path = data_dir(data, idx_images(100, 28, 28, 100 * 784), idx_labels(100, 100));
  auto own = run_command(tether_bin() + " train " + shipped + cheap + " --set data.path=" + path, 120);
  CAPTURE(own.output);
  CHECK(own.exit_code == 0);
  CHECK(own.output.find("data fashion-mnist from " + path + " (100 train / 20 test)") != std::string::npos);
}

// `tether config`: the resolved config for scripts (README, "Scripts").
TEST_CASE("cli: config prints the resolved config as JSON that train reads back") {
  TempDir dir("cliconfig");
  std::string cfg = dir.write("cfg.json", R"({"model": {"name": "mlp", "hidden": 16},
      "data": {"name": "synthetic", "synthetic_train": 64, "synthetic_test": 16, "batch_size": 16},
      "cluster": {"peers": [{"id": 0, "host": "127.0.0.1", "port": 5550},
                            {"id": 1, "host": "127.0.0.1", "port": 5551, "ssh_user": "bob"}]},
      "log": {"dir": ")" + dir.file("log") + R"(", "progress": false}})");
  const std::string sets = " --set optimizer.lr=0.2 --set cluster.peers.1.host=10.0.0.2";
  auto r = run_command(tether_bin() + " config " + cfg + sets + " 2>/dev/null", 60);
  REQUIRE(r.exit_code == 0);
  const nlohmann::json doc = nlohmann::json::parse(r.output);
  CHECK(doc.at("optimizer").at("lr") == 0.2);                   // the --set
  CHECK(doc.at("optimizer").at("momentum") == 0.9);             // a default, filled in
  CHECK(doc.at("cluster").at("peers").at(1).at("host") == "10.0.0.2");   // --set into an array
  CHECK(doc.at("cluster").at("peers").at(1).at("ssh_user") == "bob");
  CHECK(doc.at("cluster").at("peers").at(0).at("ssh_user").is_null());
  CHECK(doc.at("data").at("path").is_null());
  CHECK(doc.at("monitor").at("bound") == "auto");
  CHECK(doc == tether::config_to_json(tether::load_config(cfg, {"optimizer.lr=0.2", "cluster.peers.1.host=10.0.0.2"})));
  // Its output is a config: same run keys, and `tether config` of it prints it again.
  std::string resolved = dir.write("resolved.json", r.output);
  CHECK(tether::config_hash(tether::load_config(resolved, {})) ==
        tether::config_hash(tether::load_config(cfg, {"optimizer.lr=0.2", "cluster.peers.1.host=10.0.0.2"})));
  auto again = run_command(tether_bin() + " config " + resolved + " 2>/dev/null", 60);
  CHECK(again.exit_code == 0);
  CHECK(again.output == r.output);
  // --help of the command
  auto help = run_command(tether_bin() + " config --help", 60);
  CHECK(help.exit_code == 0);
  CHECK(help.output.find("usage: tether config CONFIG") != std::string::npos);
  CHECK(help.output.find("ID HOST PORT SSH_PORT SSH_USER WORKDIR") != std::string::npos);
}

TEST_CASE("cli: config --peers and --get print what shell scripts need") {
  TempDir dir("clipeers");
  std::string cfg = dir.write("cfg.json", R"({"cluster": {"peers": [
      {"id": 1, "host": "b.example", "port": 5551, "ssh_user": "bob", "ssh_port": 2222, "workdir": "/srv/my runs"},
      {"id": 0, "host": "10.0.0.1", "port": 5550}]}, "log": {"dir": "runs/x y"}})");
  auto peers = run_command(tether_bin() + " config " + cfg + " --peers", 60);
  CHECK(peers.exit_code == 0);
  CHECK(peers.output ==
        "1 b.example 5551 2222 bob /srv/my runs\n"
        "0 10.0.0.1 5550 22 - -\n");
  // --set on an array element, as train takes it
  auto moved = run_command(tether_bin() + " config " + cfg + " --peers --set cluster.peers.1.ssh_port=2200", 60);
  CHECK(moved.output == "1 b.example 5551 2222 bob /srv/my runs\n0 10.0.0.1 5550 2200 - -\n");
  std::string single = dir.write("single.json", "{}");
  auto none = run_command(tether_bin() + " config " + single + " --peers", 60);
  CHECK(none.exit_code == 0);
  CHECK(none.output.empty());

  auto get = [&](const std::string& args) { return run_command(tether_bin() + " config " + cfg + " " + args, 60); };
  CHECK(get("--get log.dir").output == "runs/x y\n");
  CHECK(get("--get cluster.peers.0.port").output == "5551\n");
  CHECK(get("--get optimizer.momentum").output == "0.9\n");
  CHECK(get("--get log.progress").output == "true\n");
  CHECK(get("--get data.path").output == "\n");   // unset: null, printed empty
  CHECK(get("--get train.epochs --set train.epochs=7").output == "7\n");
  expect({"--get of an object", "config " + cfg + " --get model", 2,
          "tether: config error: --get model: expected the path of one value"});
  expect({"--get of no key", "config " + cfg + " --get model.nmae", 2,
          "--get model.nmae: model.nmae: no such key (known here: depth, dropout, hidden, name, width)"});
  expect({"--peers and --get", "config " + cfg + " --peers --get log.dir", 2, "tether: --peers excludes --get"});
  expect({"config without CONFIG", "config", 2, "config: missing CONFIG"});
  expect({"config: train's options are not its", "config " + cfg + " --node 1", 2, "unknown option --node for config"});
}

// Every config error of `tether config` is train's, byte for byte: the same
// prefix, message and exit code 2 (the scripts rely on it).
TEST_CASE("cli: config's errors are exactly train's") {
  TempDir dir("cliconfigerr");
  auto cfg = [&](const std::string& name, const std::string& text) { return dir.write(name, text); };
  const std::string peers = R"({"cluster": {"peers": [{"id": 0, "host": "127.0.0.1", "port": 5550},
                                                      {"id": 1, "host": "127.0.0.1", "port": 5551}]}})";
  std::vector<std::string> cases = {
      dir.file("absent.json"),
      cfg("broken.json", "{\"model\": {\"name\": \"lenet\",}"),
      cfg("array.json", "[1, 2]"),
      cfg("lr.json", R"({"optimizer": {"lr": -1}})"),
      cfg("key.json", R"({"model": {"nmae": "lenet"}})"),
      cfg("type.json", R"({"data": {"batch_size": "64"}})"),
      cfg("ok.json", "{}") + " --set optimizer.lr=-3",
      cfg("ok2.json", "{}") + " --set optimizer",
      cfg("p.json", peers) + " --set cluster.peers.5.host=x",
      cfg("p2.json", peers) + " --set cluster.peers.x.host=y",
      cfg("p3.json", peers) + " --set cluster.peers.1.host=bad\\ host",
      cfg("p4.json", peers) + " --set cluster.peers.1.id=0",
      cfg("dev.json", R"({"device": "tpu"})"),
  };
  for (const auto& args : cases) {
    CAPTURE(args);
    auto train = run_command(tether_bin() + " train " + args, 60);
    auto config = run_command(tether_bin() + " config " + args, 60);
    auto peers_out = run_command(tether_bin() + " config " + args + " --peers", 60);
    CHECK(train.exit_code == 2);
    CHECK(config.exit_code == 2);
    CHECK(peers_out.exit_code == 2);
    CHECK(train.output.rfind("tether: config error: ", 0) == 0);
    CHECK(config.output == train.output);
    CHECK(peers_out.output == train.output);
  }
}

// model.layers through the binary: every bad declaration exits 2 naming the
// layer's JSON path, before any data is read; a declaration that fits the
// data set's usual images but not the files read fails the same way.
TEST_CASE("cli: bad model.layers declarations exit 2 naming the layer and the shapes") {
  TempDir dir("cli-layers");
  const std::string lenet = tether::testing::source_root() + "/configs/fmnist-lenet-layers.json";
  auto layers = [&](const std::string& name, const std::string& list) {
    return dir.write(name, R"({"model": {"layers": )" + list + R"(}, "data": {"name": "synthetic"}})");
  };
  const std::string tail = R"(, {"type": "flatten"}, {"type": "linear", "out": 10}])";
  expect({"empty", "train " + layers("empty.json", "[]"), 2, "model.layers: expected a non-empty array of layers, got []"});
  expect({"unknown type", "train " + layers("type.json", R"([{"type": "lstm"}])" ), 2,
          "model.layers[0].type: expected one of \"conv2d\", \"linear\", \"relu\""});
  expect({"unknown key", "train " + layers("key.json", R"([{"type": "conv2d", "out": 4, "kernel": 3, "strides": 2})" + tail),
          2, "model.layers[0].strides: unknown key (known here: bias, in, kernel, out, padding, stride, type)"});
  expect({"missing out", "train " + layers("out.json", R"([{"type": "flatten"}, {"type": "linear"}])"), 2,
          "model.layers[1].out: missing (expected an integer in 1..1048576)"});
  expect({"in does not fit", "train " + lenet + " --set model.layers.7.in=1568", 2,
          "model.layers[7].in: expected 3136 inputs, got 1568"});
  expect({"a pool changed by --set", "train " + lenet + " --set model.layers.2.kernel=3", 2,
          "model.layers[7].in: expected 1024 inputs, got 3136 (the input of this layer is (1024,1,1))"});
  expect({"logits", "train " + lenet + " --set model.layers.9.out=100", 2,
          "model.layers[9].out: expected 10 (the data set's classes: the last layer gives the logits), got 100"});
  expect({"no flatten", "train " + layers("flat.json", R"([{"type": "conv2d", "out": 4, "kernel": 3}, {"type": "linear", "out": 10}])"),
          2, "model.layers[1]: linear expects a flat input (F,1,1), got (4,26,26)"});
  expect({"residual", "train " + layers("res.json", R"([{"type": "residual", "layers": [{"type": "conv2d", "out": 4, "kernel": 3}]})" + tail),
          2, "model.layers[0]: the body (layers) gives (4,26,26) but the shortcut (none: the identity) gives (1,28,28)"});
  expect({"kernel", "train " + layers("kernel.json", R"([{"type": "maxpool2d", "kernel": 30})" + tail), 2,
          "model.layers[0].kernel: expected at most 28 (the input (1,28,28) with padding 0), got 30"});
  expect({"name and layers", "train " + lenet + " --set model.name=lenet", 2,
          "model.name: expected \"custom\" or no name with model.layers (a declared model), got \"lenet\""});
  expect({"dropout p", "train " + layers("p.json", R"([{"type": "dropout", "p": 1.5})" + tail), 2,
          "model.layers[0].p: expected a number in [0, 1), got 1.5"});
  // IDX files of 20x20 images: lenet's flatten gives 64*5*5.
  TempDir data("cli-layers-idx");
  for (const char* split : {"train", "t10k"}) {
    data.write(std::string(split) + "-images-idx3-ubyte", idx_images(10, 20, 20, 10 * 400));
    data.write(std::string(split) + "-labels-idx1-ubyte", idx_labels(10, 10));
  }
  expect({"files of other images", "train " + lenet + " --set data.path=" + data.path(), 2,
          "model.layers[7].in: expected 1600 inputs, got 3136 (the input of this layer is (1600,1,1)) [the data set "
          "read has images (1,20,20), 10 classes]"});
}

// The run keys of a declared model are its layers, one key each: --resume
// with a changed layer is refused naming that layer with both declarations.
TEST_CASE("cli: --resume refuses a changed model.layers, naming the layer") {
  TempDir dir("cli-layers-resume");
  std::string cfg = dir.write("cfg.json", R"({"model": {"layers": [{"type": "flatten"}, {"type": "linear", "out": 16},
      {"type": "relu"}, {"type": "linear", "out": 10}]},
      "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 64, "batch_size": 32},
      "train": {"epochs": 2, "threads": 1}, "log": {"dir": ")" + dir.file("log") + R"(", "progress": false}})");
  auto first = run_command(tether_bin() + " train " + cfg + " --set train.max_steps=3", 120);
  CAPTURE(first.output);
  REQUIRE(first.exit_code == 0);
  const std::string ck = dir.file("log/node-0.ckpt");
  expect({"changed layer", "train " + cfg + " --resume " + ck + " --set model.layers.1.out=24", 2,
          "was written by a run with model.layers[1]={\"bias\":true,\"out\":16,\"type\":\"linear\"}; "
          "this run has model.layers[1]={\"bias\":true,\"out\":24,\"type\":\"linear\"}"});
  auto builtin = run_command(tether_bin() + " train " + cfg + " --resume " + ck +
                             " --set model.layers=null --set model.name=mlp --set model.hidden=16");
  CAPTURE(builtin.output);
  CHECK(builtin.exit_code == 2);
  CHECK(builtin.output.find("model.name=\"custom\"") != std::string::npos);
  CHECK(builtin.output.find("model.name=\"mlp\"") != std::string::npos);
  // Same model: an explicit default, a stated `in` (it only checks).
  auto same = run_command(tether_bin() + " train " + cfg + " --resume " + ck +
                          " --set model.layers.1.bias=true --set model.layers.1.in=784", 120);
  CAPTURE(same.output);
  CHECK(same.exit_code == 0);
}
