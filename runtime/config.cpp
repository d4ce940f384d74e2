#include "runtime/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "models/dataset.h"

namespace tether {

using nlohmann::json;

namespace {

std::string show(const json& v) {
  // replace: a string of a --set that is not UTF-8 must not make the message throw
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// One JSON object being read: remembers which keys were consumed so that an
// unknown key is reported with its path.
class Obj {
 public:
  Obj(const json* doc, std::string path) : doc_(doc), path_(std::move(path)) {
    if (doc_ != nullptr && !doc_->is_object()) fail(path_, "an object", *doc_);
  }
  ~Obj() = default;

  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  [[noreturn]] static void fail(const std::string& path, const std::string& expected, const json& got) {
    throw ConfigError((path.empty() ? std::string("config") : path) + ": expected " + expected + ", got " + show(got));
  }

  const json* get(const std::string& key) {
    seen_.insert(key);
    if (doc_ == nullptr) return nullptr;
    auto it = doc_->find(key);
    return it == doc_->end() ? nullptr : &*it;
  }
  Obj child(const std::string& key) { return Obj(get(key), join(path_, key)); }

  double number(const std::string& key, double dflt, double lo, double hi, const char* range) {
    const json* v = get(key);
    if (v == nullptr) return dflt;
    if (!v->is_number() || v->get<double>() < lo || v->get<double>() > hi) {
      fail(join(path_, key), std::string("a number ") + range, *v);
    }
    return v->get<double>();
  }
  int64_t integer(const std::string& key, int64_t dflt, int64_t lo, int64_t hi, const char* range) {
    const json* v = get(key);
    if (v == nullptr) return dflt;
    if (!v->is_number_integer() || v->get<int64_t>() < lo || v->get<int64_t>() > hi) {
      fail(join(path_, key), std::string("an integer ") + range, *v);
    }
    return v->get<int64_t>();
  }
  bool boolean(const std::string& key, bool dflt) {
    const json* v = get(key);
    if (v == nullptr) return dflt;
    if (!v->is_boolean()) fail(join(path_, key), "true or false", *v);
    return v->get<bool>();
  }
  std::string string(const std::string& key, const std::string& dflt) {
    const json* v = get(key);
    if (v == nullptr) return dflt;
    if (!v->is_string() || v->get<std::string>().empty()) fail(join(path_, key), "a non-empty string", *v);
    return v->get<std::string>();
  }
  // A key that may be left unset: absent or null gives "" (what config_to_json
  // writes as null), otherwise a non-empty string.
  std::string optional_string(const std::string& key) {
    const json* v = get(key);
    if (v == nullptr || v->is_null()) return "";
    if (!v->is_string() || v->get<std::string>().empty()) fail(join(path_, key), "a non-empty string or null", *v);
    return v->get<std::string>();
  }
  std::string choice(const std::string& key, const std::string& dflt, const std::vector<std::string>& options) {
    const json* v = get(key);
    if (v == nullptr) return dflt;
    std::string expected = "one of";
    for (size_t i = 0; i < options.size(); ++i) expected += (i ? ", \"" : " \"") + options[i] + "\"";
    if (!v->is_string()) fail(join(path_, key), expected, *v);
    for (const auto& o : options) {
      if (*v == o) return o;
    }
    fail(join(path_, key), expected, *v);
  }
  // Rejects keys nobody asked for.
  void finish() const {
    if (doc_ == nullptr) return;
    for (auto it = doc_->begin(); it != doc_->end(); ++it) {
      if (!seen_.count(it.key())) {
        std::string known;
        for (const auto& k : seen_) known += (known.empty() ? "" : ", ") + k;
        throw ConfigError(join(path_, it.key()) + ": unknown key (known here: " + known + ")");
      }
    }
  }
  const std::string& path() const { return path_; }

 private:
  const json* doc_;
  std::string path_;
  std::set<std::string> seen_;
};

constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
constexpr const char* kHostChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:[]-";
// ZeroMQ's Z85 alphabet; a CURVE key is 32 bytes, 40 characters.
constexpr const char* kZ85Chars =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
bool is_z85_key(const std::string& s) {
  return s.size() == 40 && s.find_first_not_of(kZ85Chars) == std::string::npos;
}
constexpr const char* kLoginChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

// model.layers (models/layer_decl.h): every layer an object with "type" and
// the keys of that type, nothing else; a residual holds its own lists.
constexpr int kMaxResidualNesting = 16;

std::vector<LayerDecl> parse_layers(const json& list, const std::string& path, int nesting);

LayerDecl parse_layer(const json& doc, const std::string& path, int nesting) {
  Obj o(&doc, path);
  LayerDecl d;
  std::vector<std::string> names;
  for (LayerType t : all_layer_types()) names.push_back(layer_type_name(t));
  const json* type = o.get("type");
  std::string expected = "one of";
  for (size_t i = 0; i < names.size(); ++i) expected += (i ? ", \"" : " \"") + names[i] + "\"";
  if (type == nullptr) throw ConfigError(path + ".type: missing (expected " + expected + ")");
  bool known = false;
  for (LayerType t : all_layer_types()) {
    if (type->is_string() && *type == layer_type_name(t)) {
      d.type = t;
      known = true;
    }
  }
  if (!known) Obj::fail(path + ".type", expected, *type);
  auto required = [&](const char* key, int64_t lo, int64_t hi, const char* range) {
    if (doc.find(key) == doc.end()) {
      throw ConfigError(path + "." + key + ": missing (expected an integer " + range + ")");
    }
    return int(o.integer(key, 0, lo, hi, range));
  };
  auto in = [&]() {   // optional: absent or null = not checked
    const json* v = o.get("in");
    if (v == nullptr || v->is_null()) return 0;
    return int(o.integer("in", 0, 1, int64_t(kMaxActivationCount), "in 1..2^28 or null (not checked)"));
  };
  switch (d.type) {
    case LayerType::kConv2d:
      d.out = required("out", 1, 65536, "in 1..65536");
      d.kernel = required("kernel", 1, 1024, "in 1..1024");
      d.stride = int(o.integer("stride", 1, 1, 1024, "in 1..1024"));
      d.padding = int(o.integer("padding", 0, 0, 1024, "in 0..1024"));
      d.bias = o.boolean("bias", true);
      d.in = in();
      break;
    case LayerType::kLinear:
      d.out = required("out", 1, 1 << 20, "in 1..1048576");
      d.bias = o.boolean("bias", true);
      d.in = in();
      break;
    case LayerType::kMaxPool2d:
    case LayerType::kAvgPool2d:
      d.kernel = required("kernel", 1, 1024, "in 1..1024");
      d.stride = int(o.integer("stride", d.kernel, 1, 1024, "in 1..1024 (absent: the kernel)"));
      d.padding = int(o.integer("padding", 0, 0, 512, "in 0..kernel/2"));
      break;
    case LayerType::kBatchNorm2d:
      d.momentum = o.number("momentum", d.momentum, 0.0, 1.0, "in [0, 1]");
      d.eps = o.number("eps", d.eps, 0.0, 1.0, "in (0, 1]");
      if (d.eps <= 0) Obj::fail(path + ".eps", "a number in (0, 1]", doc["eps"]);
      break;
    case LayerType::kDropout:
      d.p = o.number("p", d.p, 0.0, 1.0, "in [0, 1)");
      if (d.p >= 1.0) Obj::fail(path + ".p", "a number in [0, 1)", doc["p"]);
      break;
    case LayerType::kResidual: {
      if (nesting >= kMaxResidualNesting) {
        throw ConfigError(path + ": residual blocks nested deeper than " + std::to_string(kMaxResidualNesting));
      }
      const json* body = o.get("layers");
      if (body == nullptr) throw ConfigError(path + ".layers: missing (expected a non-empty array of layers: the body)");
      d.layers = parse_layers(*body, path + ".layers", nesting + 1);
      const json* shortcut = o.get("shortcut");   // absent, null or []: the identity
      if (shortcut != nullptr && !shortcut->is_null() && !(shortcut->is_array() && shortcut->empty())) {
        d.shortcut = parse_layers(*shortcut, path + ".shortcut", nesting + 1);
      }
      break;
    }
    case LayerType::kRelu:
    case LayerType::kGlobalAvgPool:
    case LayerType::kFlatten:
      break;
  }
  o.finish();
  return d;
}

std::vector<LayerDecl> parse_layers(const json& list, const std::string& path, int nesting) {
  if (!list.is_array() || list.empty()) Obj::fail(path, "a non-empty array of layers", list);
  std::vector<LayerDecl> out;
  for (size_t i = 0; i < list.size(); ++i) {
    out.push_back(parse_layer(list[i], path + "[" + std::to_string(i) + "]", nesting));
  }
  return out;
}

}  // namespace

void apply_override(json& doc, const std::string& assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("--set " + assignment + ": expected json.path=value");
  }
  // Config text is JSON, hence UTF-8: bytes that are not would make every
  // later dump of the document (tether config, run keys) throw.
  try {
    (void)json(assignment).dump();
  } catch (const json::type_error&) {
    throw ConfigError("--set " + show(json(assignment)) + ": not valid UTF-8 text");
  }
  std::string path = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  json value = json::parse(text, nullptr, false);
  if (value.is_discarded()) value = text;   // bare words are strings
  json* node = &doc;
  std::stringstream ss(path);
  std::string part, walked;
  std::vector<std::string> parts;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& key = parts[i];
    if (key.empty()) throw ConfigError("--set " + assignment + ": empty path component");
    walked = walked.empty() ? key : walked + "." + key;
    bool last = i + 1 == parts.size();
    if (node->is_array()) {
      size_t index = 0;
      try {
        index = std::stoul(key);
      } catch (const std::exception&) {
        throw ConfigError("--set " + assignment + ": " + walked + " indexes an array, expected a number");
      }
      if (index >= node->size()) {
        throw ConfigError("--set " + assignment + ": " + walked + " is past the end of an array of " +
                          std::to_string(node->size()));
      }
      node = &(*node)[index];
    } else {
      if (node->is_null()) *node = json::object();
      if (!node->is_object()) throw ConfigError("--set " + assignment + ": " + walked + " is not inside an object");
      node = &(*node)[key];
    }
    if (last) *node = value;
  }
}

Config parse_config(const json& doc) {
  Config c;
  c.raw = doc;
  Obj top(&doc, "");
  c.device = top.string("device", c.device);
  if (c.device != "auto" && c.device != "cpu") {
    bool ok = c.device.rfind("cuda:", 0) == 0 && c.device.size() > 5 &&
              c.device.find_first_not_of("0123456789", 5) == std::string::npos;
    if (!ok) Obj::fail("device", "\"auto\", \"cpu\" or \"cuda:N\"", doc["device"]);
  }

  {
    Obj m = top.child("model");
    const json* layers = m.get("layers");
    if (layers != nullptr && !layers->is_null()) {   // null: unset (a built-in model)
      // A declared model: its layers say everything the built-ins' keys would.
      c.model.layers = parse_layers(*layers, "model.layers", 0);
      const json* name = m.get("name");
      if (name != nullptr && *name != "custom") {
        Obj::fail("model.name", "\"custom\" or no name with model.layers (a declared model)", *name);
      }
      c.model.name = "custom";
      for (const char* key : {"depth", "width", "hidden", "dropout"}) {
        if (m.get(key) != nullptr) {
          throw ConfigError(std::string("model.") + key + ": a key of the built-in models (model.name mlp, lenet, "
                            "resnet), not of a declared model (model.layers): declare the layers you want instead");
        }
      }
    } else {
      const json* name = m.get("name");
      if (name != nullptr && *name == "custom") {
        throw ConfigError("model.name: \"custom\" is a declared model: expected model.layers with it");
      }
      c.model.name = m.choice("name", c.model.name, {"mlp", "lenet", "resnet"});
      c.model.depth = int(m.integer("depth", c.model.depth, 1, 64, "in 1..64"));
      c.model.width = int(m.integer("width", c.model.width, 1, 1024, "in 1..1024"));
      c.model.hidden = int(m.integer("hidden", c.model.hidden, 1, 1 << 16, "in 1..65536"));
      c.model.dropout = m.number("dropout", c.model.dropout, 0.0, 0.95, "in [0, 0.95]");
    }
    m.finish();
  }
  {
    Obj d = top.child("data");
    c.data.name = d.choice("name", c.data.name, {"fashion-mnist", "mnist", "cifar10", "synthetic"});
    // Absent: empty, and the loader reads the data set's own default
    // directory, so --set data.name alone switches data sets.
    c.data.path = d.optional_string("path");
    c.data.batch_size = int(d.integer("batch_size", c.data.batch_size, 1, 65536, "in 1..65536"));
    c.data.synthetic_train = int(d.integer("synthetic_train", c.data.synthetic_train, 1, 10000000, "in 1..10000000"));
    c.data.synthetic_test = int(d.integer("synthetic_test", c.data.synthetic_test, 1, 10000000, "in 1..10000000"));
    d.finish();
  }
  if (!c.model.layers.empty()) {
    // Shapes against the images data.name gives (the trainer checks again
    // with the files actually read).
    const DatasetShape shape = dataset_shape(c.data.name);
    const Shape input{shape.channels, shape.height, shape.width};
    try {
      build_layers(c.model.layers, input, shape.classes, "model.layers");
    } catch (const ModelDeclError& e) {
      throw ConfigError(std::string(e.what()) + " [data.name \"" + c.data.name + "\": images " + input.str() + ", " +
                        std::to_string(shape.classes) + " classes]");
    }
  }
  {
    Obj o = top.child("optimizer");
    c.optimizer.name = o.choice("name", c.optimizer.name, {"sgd"});
    c.optimizer.lr = o.number("lr", c.optimizer.lr, 0.0, 1e3, "> 0");
    if (c.optimizer.lr <= 0) Obj::fail("optimizer.lr", "a number > 0", doc["optimizer"]["lr"]);
    c.optimizer.momentum = o.number("momentum", c.optimizer.momentum, 0.0, 0.9999, "in [0, 1)");
    c.optimizer.weight_decay = o.number("weight_decay", c.optimizer.weight_decay, 0.0, 1.0, "in [0, 1]");
    c.optimizer.nesterov = o.boolean("nesterov", c.optimizer.nesterov);
    if (c.optimizer.nesterov && c.optimizer.momentum == 0) {
      throw ConfigError("optimizer.nesterov: needs optimizer.momentum > 0");
    }
    c.optimizer.schedule = o.choice("schedule", c.optimizer.schedule, {"constant", "cosine", "step"});
    c.optimizer.warmup_epochs = o.number("warmup_epochs", c.optimizer.warmup_epochs, 0.0, 1e4, ">= 0");
    c.optimizer.min_lr = o.number("min_lr", c.optimizer.min_lr, 0.0, 1e3, ">= 0");
    c.optimizer.step_epochs = o.number("step_epochs", c.optimizer.step_epochs, 0.0, 1e4, ">= 0");
    c.optimizer.gamma = o.number("gamma", c.optimizer.gamma, 0.0, 1.0, "in (0, 1]");
    c.optimizer.scale_lr = o.boolean("scale_lr", c.optimizer.scale_lr);
    if (c.optimizer.schedule == "step" && c.optimizer.step_epochs <= 0) {
      throw ConfigError("optimizer.step_epochs: expected a number > 0 with schedule \"step\", got " +
                        show(c.optimizer.step_epochs));
    }
    o.finish();
  }
  {
    Obj t = top.child("train");
    c.train.epochs = int(t.integer("epochs", c.train.epochs, 1, 100000, "in 1..100000"));
    c.train.seed = uint64_t(t.integer("seed", int64_t(c.train.seed), 0, std::numeric_limits<int64_t>::max(), ">= 0"));
    c.train.threads = int(t.integer("threads", c.train.threads, 0, 1024, "in 0..1024 (0 = every core)"));
    c.train.max_steps = t.integer("max_steps", c.train.max_steps, 0, std::numeric_limits<int64_t>::max(), ">= 0");
    c.train.eval_every_epochs = int(t.integer("eval_every_epochs", c.train.eval_every_epochs, 0, 100000, ">= 0"));
    c.train.checkpoint_every_steps =
        t.integer("checkpoint_every_steps", c.train.checkpoint_every_steps, 0, std::numeric_limits<int64_t>::max(), ">= 0");
    c.train.checkpoint = t.optional_string("checkpoint");
    c.train.tf32 = t.boolean("tf32", c.train.tf32);
    c.train.compute = t.choice("compute", c.train.compute, {"real", "synthetic"});
    c.train.synthetic_step_ms = t.number("synthetic_step_ms", c.train.synthetic_step_ms, 0.0, 600000.0, "in [0, 600000]");
    c.train.extra_step_ms = t.number("extra_step_ms", c.train.extra_step_ms, 0.0, 600000.0, "in [0, 600000]");
    t.finish();
  }
  {
    Obj l = top.child("log");
    c.log.dir = l.string("dir", c.log.dir);
    c.log.every_steps = int(l.integer("every_steps", c.log.every_steps, 1, kMaxInt, ">= 1"));
    c.log.progress = l.boolean("progress", c.log.progress);
    l.finish();
  }
  {
    Obj cl = top.child("cluster");
    const json* peers = cl.get("peers");
    if (peers != nullptr && !peers->is_null()) {   // null: a single node, as config_to_json writes it
      if (!peers->is_array() || peers->empty()) Obj::fail("cluster.peers", "a non-empty array of {id, host, port}", *peers);
      std::set<int> ids;
      std::set<std::pair<std::string, int>> endpoints;
      for (size_t i = 0; i < peers->size(); ++i) {
        std::string path = "cluster.peers[" + std::to_string(i) + "]";
        Obj p(&(*peers)[i], path);
        PeerConfig pc;
        pc.id = int(p.integer("id", -1, 0, 4095, "in 0..4095"));
        if (pc.id < 0) throw ConfigError(path + ".id: missing (expected an integer in 0..4095)");
        pc.host = p.string("host", pc.host);
        // Host names, IPv4 and IPv6 addresses: what ZeroMQ's tcp:// and ssh
        // take, and nothing a shell or the --peers line would split.
        if (pc.host[0] == '-' || pc.host.find_first_not_of(kHostChars) != std::string::npos) {
          Obj::fail(path + ".host", "a host name or address", (*peers)[i]["host"]);
        }
        pc.port = int(p.integer("port", 0, 1, 65535, "in 1..65535"));
        if (pc.port == 0) throw ConfigError(path + ".port: missing (expected an integer in 1..65535)");
        pc.ssh_user = p.optional_string("ssh_user");
        if (!pc.ssh_user.empty() &&
            (pc.ssh_user[0] == '-' || pc.ssh_user.find_first_not_of(kLoginChars) != std::string::npos)) {
          Obj::fail(path + ".ssh_user", "a login name (letters, digits, '.', '_', '-') or null", (*peers)[i]["ssh_user"]);
        }
        pc.ssh_port = int(p.integer("ssh_port", pc.ssh_port, 1, 65535, "in 1..65535"));
        pc.public_key = p.optional_string("public_key");
        if (!pc.public_key.empty() && !is_z85_key(pc.public_key)) {
          Obj::fail(path + ".public_key", "a CURVE public key (40 Z85 characters, as `tether keygen` writes)",
                    (*peers)[i]["public_key"]);
        }
        pc.workdir = p.optional_string("workdir");
        // "-" stands for "unset" on a `tether config --peers` line.
        if (pc.workdir == "-" || std::any_of(pc.workdir.begin(), pc.workdir.end(),
                                             [](char ch) { return static_cast<unsigned char>(ch) < 0x20; })) {
          Obj::fail(path + ".workdir", "a directory (no control characters, not \"-\") or null", (*peers)[i]["workdir"]);
        }
        p.finish();
        if (!ids.insert(pc.id).second) throw ConfigError(path + ".id: duplicate id " + std::to_string(pc.id));
        if (!endpoints.insert({pc.host, pc.port}).second) {
          throw ConfigError(path + ": duplicate endpoint " + pc.host + ":" + std::to_string(pc.port));
        }
        c.cluster.peers.push_back(pc);
      }
      for (size_t i = 0; i < c.cluster.peers.size(); ++i) {
        if (!ids.count(int(i))) {
          throw ConfigError("cluster.peers: ids must be 0.." + std::to_string(c.cluster.peers.size() - 1) +
                            ", id " + std::to_string(i) + " is missing");
        }
      }
    }
    cl.finish();
  }
  {
    Obj a = top.child("algorithm");
    c.algorithm.name = a.choice("name", c.algorithm.name, {"overlap", "sync", "local-sgd", "downpour", "easgd"});
    c.algorithm.staleness = int(a.integer("staleness", c.algorithm.staleness, 0, 64, "in 0..64"));
    const json* period = a.get("period");
    if (period != nullptr && period->is_string() && *period == "auto") {
      c.algorithm.period_auto = true;   // H starts at 1 and follows the measured times
    } else {
      c.algorithm.period = int(a.integer("period", c.algorithm.period, 1, 1000000, ">= 1 or \"auto\""));
    }
    c.algorithm.round_ms = int(a.integer("round_ms", c.algorithm.round_ms, 0, 3600000, "in 0..3600000 (0: every H steps)"));
    c.algorithm.mixer = a.choice("mixer", c.algorithm.mixer, {"ring", "gossip"});
    c.algorithm.n_push = int(a.integer("n_push", c.algorithm.n_push, 1, 1000000, ">= 1"));
    c.algorithm.n_fetch = int(a.integer("n_fetch", c.algorithm.n_fetch, 1, 1000000, ">= 1"));
    c.algorithm.alpha = a.number("alpha", c.algorithm.alpha, 0.0, 0.5, "in [0, 0.5]");
    c.algorithm.tau = int(a.integer("tau", c.algorithm.tau, 1, 1000000, ">= 1"));
    if (c.algorithm.mixer == "gossip" && (c.algorithm.name == "local-sgd" || c.algorithm.server_based())) {
      throw ConfigError("algorithm.mixer: \"" + c.algorithm.name + "\" " +
                        (c.algorithm.server_based() ? std::string("moves parameters through shard servers, not a mixer")
                                                    : std::string("is a blocking ring average")) +
                        "; leave it \"ring\", got \"gossip\"");
    }
    a.finish();
  }
  {
    Obj m = top.child("monitor");
    const json* b = m.get("bound");
    if (b != nullptr && !(b->is_string() && *b == "auto")) {
      if (!b->is_number() || b->get<double>() <= 0) Obj::fail("monitor.bound", "\"auto\" or a number > 0", *b);
      c.monitor.bound = b->get<double>();
    }
    c.monitor.sketch_buckets = int(m.integer("sketch_buckets", c.monitor.sketch_buckets, 16, 1 << 20, "in 16..1048576"));
    c.monitor.snapshots = m.boolean("snapshots", c.monitor.snapshots);
    c.monitor.snapshot_every = int(m.integer("snapshot_every", c.monitor.snapshot_every, 1, kMaxInt, ">= 1"));
    m.finish();
  }
  {
    Obj n = top.child("net");
    c.net.connect_timeout_ms = int(n.integer("connect_timeout_ms", c.net.connect_timeout_ms, 100, 3600000, "in 100..3600000"));
    c.net.heartbeat_ms = int(n.integer("heartbeat_ms", c.net.heartbeat_ms, 10, 60000, "in 10..60000"));
    c.net.peer_timeout_ms = int(n.integer("peer_timeout_ms", c.net.peer_timeout_ms, 50, 3600000, "in 50..3600000"));
    c.net.round_timeout_ms = int(n.integer("round_timeout_ms", c.net.round_timeout_ms, 0, 86400000, "in 0..86400000 (0: off)"));
    c.net.quorum_wait_ms = int(n.integer("quorum_wait_ms", c.net.quorum_wait_ms, 0, 86400000, "in 0..86400000"));
    c.net.late_start_ms = int(n.integer("late_start_ms", c.net.late_start_ms, 0, 3600000, "in 0..3600000 (0: off)"));
    c.net.shutdown_timeout_ms = int(n.integer("shutdown_timeout_ms", c.net.shutdown_timeout_ms, 100, 3600000, "in 100..3600000"));
    c.net.chunk_bytes = n.integer("chunk_bytes", c.net.chunk_bytes, 1024, int64_t(1) << 30, "in 1024..2^30");
    c.net.inject_delay_ms = n.number("inject_delay_ms", c.net.inject_delay_ms, 0.0, 60000.0, "in [0, 60000]");
    c.net.inject_rate_mbps = n.number("inject_rate_mbps", c.net.inject_rate_mbps, 0.0, 1e6, "in [0, 1e6]");
    c.net.security = n.choice("security", c.net.security, {"curve", "none"});
    c.net.secret_key_file = n.optional_string("secret_key_file");
    c.net.compression = n.choice("compression", c.net.compression, {"none", "bf16", "int8"});
    if (c.net.peer_timeout_ms <= c.net.heartbeat_ms) {
      throw ConfigError("net.peer_timeout_ms: expected more than net.heartbeat_ms (" +
                        std::to_string(c.net.heartbeat_ms) + "), got " + std::to_string(c.net.peer_timeout_ms));
    }
    n.finish();
  }
  if (c.algorithm.server_based() && c.monitor.bound > 0) {
    throw ConfigError("monitor.bound: \"" + c.algorithm.name + "\" has no distance bound (its discrepancy grows with "
                      "the gradient delay); leave it \"auto\", got " + show(json(c.monitor.bound)));
  }
  if (c.algorithm.mixer == "gossip" && c.monitor.bound > 0) {
    throw ConfigError("monitor.bound: the gossip mixer has no proven distance bound (its spread depends on the number "
                      "of nodes and the schedule, not on algorithm.staleness alone); leave it \"auto\": no "
                      "throttle, distances are still estimated and logged, got " + show(json(c.monitor.bound)));
  }
  if (c.algorithm.clocked_rounds()) {
    // Rounds that are not a fixed number of steps: the overlap ring only.
    const std::string key = c.algorithm.round_ms > 0 ? "algorithm.round_ms" : "algorithm.period";
    const std::string what = c.algorithm.round_ms > 0 ? "rounds by time" : "an automatic period";
    if (c.algorithm.round_ms > 0 && c.algorithm.period_auto)
      throw ConfigError("algorithm.period: \"auto\" picks a number of steps per round, algorithm.round_ms closes "
                        "rounds on the clock; set one of them, not both");
    if (c.algorithm.round_ms > 0 && c.algorithm.period != 1)
      throw ConfigError("algorithm.period: rounds close every algorithm.round_ms (" + std::to_string(c.algorithm.round_ms) +
                        " ms), not every H steps; leave period 1, got " + std::to_string(c.algorithm.period));
    if (c.algorithm.name != "overlap")
      throw ConfigError(key + ": " + what + " needs algorithm.name \"overlap\" (rounds in flight while computing), got \"" +
                        c.algorithm.name + "\"");
    if (c.algorithm.mixer != "ring")
      throw ConfigError(key + ": " + what + " runs on the ring mixer (every node must see every node's round), got "
                        "algorithm.mixer \"" + c.algorithm.mixer + "\"");
    if (c.algorithm.period_auto && c.algorithm.staleness < 1)
      throw ConfigError("algorithm.period: \"auto\" hides a merge behind s rounds of compute; it needs "
                        "algorithm.staleness >= 1, got 0");
    if (c.train.checkpoint_every_steps > 0 && c.nodes() > 1)
      throw ConfigError("train.checkpoint_every_steps: with " + what + " (" + key + ") nodes reach a step at different "
                        "rounds, so periodic checkpoints would not form one cut; leave it 0 (an interrupted or "
                        "finished run still checkpoints at a common cut), got " +
                        std::to_string(c.train.checkpoint_every_steps));
  }
  if (c.nodes() > 1 && c.train.checkpoint_every_steps % c.algorithm.period != 0) {
    throw ConfigError("train.checkpoint_every_steps: expected a multiple of algorithm.period (" +
                      std::to_string(c.algorithm.period) + ") in a cluster, so that every node checkpoints at the same "
                      "round boundary, got " + std::to_string(c.train.checkpoint_every_steps));
  }
  top.finish();
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  json doc;
  try {
    doc = json::parse(ss.str());
  } catch (const json::exception& e) {
    // e.what() carries the byte position and what was expected (a parse
    // error), or the number that overflows a double (out_of_range 406).
    std::string what = e.what();
    size_t at = what.find("] ");
    throw ConfigError(path + ": not valid JSON: " + (at == std::string::npos ? what : what.substr(at + 2)));
  }
  if (!doc.is_object()) throw ConfigError(path + ": expected a JSON object at the top level, got " + show(doc));
  for (const auto& o : overrides) apply_override(doc, o);
  try {
    return parse_config(doc);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

RunKeys config_run_keys(const Config& cfg) {
  RunKeys keys;
  auto add = [&](const char* path, const json& value) { keys.emplace_back(path, value.dump()); };
  add("model.name", cfg.model.name);
  if (cfg.model.layers.empty()) {
    add("model.depth", cfg.model.depth);
    add("model.width", cfg.model.width);
    add("model.hidden", cfg.model.hidden);
    add("model.dropout", cfg.model.dropout);
  } else {
    // One key per layer, so that a refused resume names the layer that
    // changed. `in` is left out: parse_config has checked it equals the
    // inferred input, so stating it or not is the same model.
    const json layers = layers_to_json(cfg.model.layers);
    std::function<void(json&)> drop_in = [&](json& list) {
      for (json& layer : list) {
        layer.erase("in");
        for (const char* inner : {"layers", "shortcut"}) {
          if (layer.contains(inner)) drop_in(layer[inner]);
        }
      }
    };
    json keyed = layers;
    drop_in(keyed);
    for (size_t i = 0; i < keyed.size(); ++i) keys.emplace_back("model.layers[" + std::to_string(i) + "]", keyed[i].dump());
  }
  add("data.name", cfg.data.name);
  add("data.batch_size", cfg.data.batch_size);
  add("data.synthetic_train", cfg.data.synthetic_train);
  add("data.synthetic_test", cfg.data.synthetic_test);
  add("optimizer.name", cfg.optimizer.name);
  add("optimizer.lr", cfg.optimizer.lr);
  add("optimizer.momentum", cfg.optimizer.momentum);
  add("optimizer.weight_decay", cfg.optimizer.weight_decay);
  add("optimizer.nesterov", cfg.optimizer.nesterov);
  add("optimizer.schedule", cfg.optimizer.schedule);
  add("optimizer.warmup_epochs", cfg.optimizer.warmup_epochs);
  add("optimizer.min_lr", cfg.optimizer.min_lr);
  add("optimizer.step_epochs", cfg.optimizer.step_epochs);
  add("optimizer.gamma", cfg.optimizer.gamma);
  add("optimizer.scale_lr", cfg.optimizer.scale_lr);
  add("algorithm.name", cfg.algorithm.name);
  add("algorithm.staleness", cfg.algorithm.staleness);
  add("algorithm.period", cfg.algorithm.period_auto ? json("auto") : json(cfg.algorithm.period));
  if (cfg.algorithm.round_ms > 0) add("algorithm.round_ms", cfg.algorithm.round_ms);   // absent: the hash of earlier runs
  add("algorithm.mixer", cfg.algorithm.mixer);
  add("algorithm.n_push", cfg.algorithm.n_push);
  add("algorithm.n_fetch", cfg.algorithm.n_fetch);
  add("algorithm.alpha", cfg.algorithm.alpha);
  add("algorithm.tau", cfg.algorithm.tau);
  add("monitor.bound", cfg.monitor.bound == 0.0 ? json("auto") : json(cfg.monitor.bound));
  add("monitor.sketch_buckets", cfg.monitor.sketch_buckets);
  add("train.epochs", cfg.train.epochs);
  add("train.seed", cfg.train.seed);
  add("train.max_steps", cfg.train.max_steps);
  add("train.compute", cfg.train.compute);
  add("train.synthetic_step_ms", cfg.train.synthetic_step_ms);
  add("train.checkpoint_every_steps", cfg.train.checkpoint_every_steps);
  // Peers by id (their order in the file does not matter), endpoints only.
  std::vector<PeerConfig> peers = cfg.cluster.peers;
  std::sort(peers.begin(), peers.end(), [](const PeerConfig& a, const PeerConfig& b) { return a.id < b.id; });
  json list = json::array();
  for (const auto& p : peers) list.push_back({{"id", p.id}, {"host", p.host}, {"port", p.port}});
  add("cluster.peers", list);
  return keys;
}

std::vector<std::string> run_keys_diff(const RunKeys& a, const RunKeys& b) {
  std::map<std::string, std::string> in_b(b.begin(), b.end());
  std::set<std::string> in_a;
  std::vector<std::string> out;
  for (const auto& [path, value] : a) {
    in_a.insert(path);
    auto it = in_b.find(path);
    if (it == in_b.end() || it->second != value) out.push_back(path);
  }
  for (const auto& [path, value] : b) {
    if (!in_a.count(path)) out.push_back(path);
  }
  return out;
}

std::vector<std::string> config_diff(const Config& a, const Config& b) {
  return run_keys_diff(config_run_keys(a), config_run_keys(b));
}

bool run_key_may_change_on_resume(const std::string& path) {
  return path == "train.max_steps" || path == "train.checkpoint_every_steps" || path == "cluster.peers";
}

namespace {
uint64_t fnv1a(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : text) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}
}  // namespace

uint64_t config_hash(const Config& cfg) {
  std::string text;
  for (const auto& [path, value] : config_run_keys(cfg)) text += path + "=" + value + "\n";
  return fnv1a(text);
}

uint64_t legacy_config_hash(const Config& cfg) {
  json shared = {{"model", cfg.raw.value("model", json::object())},
                 {"data", cfg.raw.value("data", json::object())},
                 {"optimizer", cfg.raw.value("optimizer", json::object())},
                 {"algorithm", cfg.raw.value("algorithm", json::object())},
                 {"monitor", cfg.raw.value("monitor", json::object())},
                 {"seed", cfg.train.seed},
                 {"epochs", cfg.train.epochs},
                 {"peers", cfg.raw.value("cluster", json::object()).value("peers", json::array())}};
  return fnv1a(shared.dump());
}

std::string checkpoint_path_for_node(const Config& cfg, int node) {
  const std::string id = std::to_string(node);
  if (cfg.train.checkpoint.empty()) return cfg.log.dir + "/node-" + id + ".ckpt";
  if (cfg.nodes() == 1) return cfg.train.checkpoint;
  std::filesystem::path p(cfg.train.checkpoint);
  std::filesystem::path name = p.filename();
  if (name.empty()) {   // "dir/": a directory was meant
    return cfg.train.checkpoint + "node-" + id + ".ckpt";
  }
  std::string ext = name.extension().string();   // ".ckpt", or "" (also for ".hidden")
  return (p.parent_path() / (name.stem().string() + ".node-" + id + ext)).string();
}

json config_to_json(const Config& c) {
  // Unset optional keys are null (parse_config reads null as unset); a zero
  // monitor.bound is "auto", as a config would write it.
  auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  json peers = json(nullptr);
  if (!c.cluster.peers.empty()) {
    peers = json::array();
    for (const auto& p : c.cluster.peers) {
      peers.push_back({{"id", p.id}, {"host", p.host}, {"port", p.port}, {"ssh_user", or_null(p.ssh_user)},
                       {"ssh_port", p.ssh_port}, {"workdir", or_null(p.workdir)},
                       {"public_key", or_null(p.public_key)}});
    }
  }
  // A declared model has its layers and no depth, width, hidden or dropout;
  // a built-in one no layers.
  json model = {{"name", c.model.name}};
  if (c.model.layers.empty()) {
    model.update({{"depth", c.model.depth}, {"width", c.model.width}, {"hidden", c.model.hidden},
                  {"dropout", c.model.dropout}});
  } else {
    model["layers"] = layers_to_json(c.model.layers);
  }
  return {
      {"device", c.device},
      {"model", model},
      {"data", {{"name", c.data.name}, {"path", or_null(c.data.path)}, {"batch_size", c.data.batch_size},
                {"synthetic_train", c.data.synthetic_train}, {"synthetic_test", c.data.synthetic_test}}},
      {"optimizer", {{"name", c.optimizer.name}, {"lr", c.optimizer.lr}, {"momentum", c.optimizer.momentum},
                     {"weight_decay", c.optimizer.weight_decay}, {"nesterov", c.optimizer.nesterov},
                     {"schedule", c.optimizer.schedule}, {"warmup_epochs", c.optimizer.warmup_epochs},
                     {"min_lr", c.optimizer.min_lr}, {"step_epochs", c.optimizer.step_epochs},
                     {"gamma", c.optimizer.gamma}, {"scale_lr", c.optimizer.scale_lr}}},
      {"train", {{"epochs", c.train.epochs}, {"seed", c.train.seed}, {"threads", c.train.threads},
                 {"max_steps", c.train.max_steps}, {"eval_every_epochs", c.train.eval_every_epochs},
                 {"checkpoint_every_steps", c.train.checkpoint_every_steps},
                 {"checkpoint", or_null(c.train.checkpoint)}, {"tf32", c.train.tf32},
                 {"compute", c.train.compute}, {"synthetic_step_ms", c.train.synthetic_step_ms},
                 {"extra_step_ms", c.train.extra_step_ms}}},
      {"log", {{"dir", c.log.dir}, {"every_steps", c.log.every_steps}, {"progress", c.log.progress}}},
      {"cluster", {{"peers", peers}}},
      {"algorithm", {{"name", c.algorithm.name}, {"staleness", c.algorithm.staleness},
                     {"period", c.algorithm.period_auto ? json("auto") : json(c.algorithm.period)},
                     {"round_ms", c.algorithm.round_ms}, {"mixer", c.algorithm.mixer},
                     {"n_push", c.algorithm.n_push}, {"n_fetch", c.algorithm.n_fetch},
                     {"alpha", c.algorithm.alpha}, {"tau", c.algorithm.tau}}},
      {"monitor", {{"bound", c.monitor.bound == 0.0 ? json("auto") : json(c.monitor.bound)},
                   {"sketch_buckets", c.monitor.sketch_buckets}, {"snapshots", c.monitor.snapshots},
                   {"snapshot_every", c.monitor.snapshot_every}}},
      {"net", {{"connect_timeout_ms", c.net.connect_timeout_ms}, {"heartbeat_ms", c.net.heartbeat_ms},
               {"peer_timeout_ms", c.net.peer_timeout_ms}, {"round_timeout_ms", c.net.round_timeout_ms},
               {"quorum_wait_ms", c.net.quorum_wait_ms}, {"late_start_ms", c.net.late_start_ms},
               {"shutdown_timeout_ms", c.net.shutdown_timeout_ms},
               {"chunk_bytes", c.net.chunk_bytes}, {"inject_delay_ms", c.net.inject_delay_ms},
               {"security", c.net.security}, {"secret_key_file", or_null(c.net.secret_key_file)},
               {"inject_rate_mbps", c.net.inject_rate_mbps}, {"compression", c.net.compression}}},
  };
}

json layers_to_json(const std::vector<LayerDecl>& layers) {
  json list = json::array();
  for (const LayerDecl& d : layers) {
    json j = {{"type", layer_type_name(d.type)}};
    const json in = d.in == 0 ? json(nullptr) : json(d.in);
    switch (d.type) {
      case LayerType::kConv2d:
        j.update({{"out", d.out}, {"kernel", d.kernel}, {"stride", d.stride}, {"padding", d.padding},
                  {"bias", d.bias}, {"in", in}});
        break;
      case LayerType::kLinear:
        j.update({{"out", d.out}, {"bias", d.bias}, {"in", in}});
        break;
      case LayerType::kMaxPool2d:
      case LayerType::kAvgPool2d:
        j.update({{"kernel", d.kernel}, {"stride", d.stride}, {"padding", d.padding}});
        break;
      case LayerType::kBatchNorm2d:
        j.update({{"momentum", d.momentum}, {"eps", d.eps}});
        break;
      case LayerType::kDropout:
        j["p"] = d.p;
        break;
      case LayerType::kResidual:
        j["layers"] = layers_to_json(d.layers);
        j["shortcut"] = layers_to_json(d.shortcut);
        break;
      case LayerType::kRelu:
      case LayerType::kGlobalAvgPool:
      case LayerType::kFlatten:
        break;
    }
    list.push_back(std::move(j));
  }
  return list;
}

std::string config_peer_lines(const Config& c) {
  std::string out;
  for (const auto& p : c.cluster.peers) {   // in the file's order: line k is cluster.peers.k
    out += std::to_string(p.id) + " " + p.host + " " + std::to_string(p.port) + " " + std::to_string(p.ssh_port) +
           " " + (p.ssh_user.empty() ? "-" : p.ssh_user) + " " + (p.workdir.empty() ? "-" : p.workdir) + "\n";
  }
  return out;
}

std::string config_get(const Config& c, const std::string& path) {
  const json doc = config_to_json(c);
  const json* node = &doc;
  std::stringstream ss(path);
  std::string key, walked;
  while (std::getline(ss, key, '.')) {
    walked = walked.empty() ? key : walked + "." + key;
    if (node->is_array()) {
      size_t used = 0, index = 0;
      try {
        index = std::stoul(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != key.size() || index >= node->size()) {
        throw ConfigError("--get " + path + ": " + walked + ": expected an index in 0.." +
                          std::to_string(node->size() - 1));
      }
      node = &(*node)[index];
    } else if (node->is_object() && node->contains(key)) {
      node = &(*node)[key];
    } else if (node->is_object()) {
      std::string known;
      for (auto it = node->begin(); it != node->end(); ++it) known += (known.empty() ? "" : ", ") + it.key();
      throw ConfigError("--get " + path + ": " + walked + ": no such key (known here: " + known + ")");
    } else {
      throw ConfigError("--get " + path + ": " + walked + ": no such key (" + walked.substr(0, walked.rfind('.')) +
                        " is a single value)");
    }
  }
  if (path.empty() || node->is_object() || node->is_array()) {
    throw ConfigError("--get " + path + ": expected the path of one value (e.g. log.dir, cluster.peers.0.host), got " +
                      (node->is_array() ? "an array" : "an object"));
  }
  if (node->is_null()) return "";
  if (node->is_string()) return node->get<std::string>();
  return node->dump();
}

}  // namespace tether
