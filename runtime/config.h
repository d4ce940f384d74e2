// The node's configuration: one JSON file, parsed once into typed structs.
// Every key is validated; an error names its JSON path and what was expected
// ("optimizer.lr: expected a number > 0, got -1").
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/layer_decl.h"

namespace tether {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PeerConfig {
  int id = 0;
  std::string host = "127.0.0.1";
  int port = 0;
  // ssh launcher (scripts/cluster.sh) only; ignored by the node itself.
  std::string ssh_user, workdir;
  int ssh_port = 22;
  // Z85 (40 characters): the node's CURVE public key; required for every
  // peer with net.security "curve" (tether keygen writes it).
  std::string public_key;
};

struct Config {
  std::string device = "auto";          // "auto" | "cpu" | "cuda:N"

  struct Model {
    std::string name = "lenet";         // mlp | lenet | resnet; "custom" with layers
    int depth = 1, width = 16, hidden = 512;
    double dropout = 0.0;
    // model.layers: a declared model (name "custom"; depth, width, hidden and
    // dropout do not apply). Empty: the built-in model `name`. parse_config
    // has checked its shapes against data.name's images (dataset_shape).
    std::vector<LayerDecl> layers;
  } model;

  struct Data {
    std::string name = "fashion-mnist"; // fashion-mnist | mnist | cifar10 | synthetic
    std::string path;                   // empty: the data set's default directory (models/dataset.h)
    int batch_size = 64;                // per node
    int synthetic_train = 60000, synthetic_test = 10000;
  } data;

  struct Optimizer {
    std::string name = "sgd";
    double lr = 0.05, momentum = 0.9, weight_decay = 0.0;
    bool nesterov = false;
    std::string schedule = "constant";  // constant | cosine | step
    double warmup_epochs = 0.0;
    double min_lr = 0.0;
    double step_epochs = 0.0;           // step schedule: decay every step_epochs
    double gamma = 0.1;
    bool scale_lr = false;              // linear scaling rule: lr *= number of nodes
  } optimizer;

  struct Train {
    int epochs = 1;
    uint64_t seed = 1;
    int threads = 0;                    // CPU threads; 0 = every core
    int64_t max_steps = 0;              // stop after this many steps (0 = all epochs)
    int eval_every_epochs = 1;
    int64_t checkpoint_every_steps = 0; // 0 = only at the end
    std::string checkpoint;             // file; empty = <log.dir>/node-<id>.ckpt
    bool tf32 = false;
    // "real" trains the model; "synthetic" replaces each step by a sleep of
    // synthetic_step_ms (no CPU) and a random update of the model's size:
    // it measures the runtime's own scaling on machines with few cores.
    std::string compute = "real";
    double synthetic_step_ms = 50.0;
    // Test aid: sleep this long after every step (a slow node on a fast
    // machine, for bench/straggler.sh and the rounds-by-time tests).
    double extra_step_ms = 0.0;
  } train;

  struct Log {
    std::string dir = "runs/default";
    int every_steps = 50;
    bool progress = true;               // live progress line on a terminal
  } log;

  struct Cluster {
    std::vector<PeerConfig> peers;      // empty: a single node
  } cluster;

  struct Algorithm {
    // overlap | sync (sync = staleness 0) | local-sgd (a blocking average
    // every H steps: staleness 0, period H) | downpour | easgd (the
    // parameter-server baselines, runtime/server_averaging.h)
    std::string name = "overlap";
    int staleness = 2;                  // s: rounds in flight while computing
    int period = 1;                     // H: local steps per round (downpour, easgd: per snapshot)
    // "period": "auto" (overlap, ring): H is picked from the measured step
    // and merge times so that a merge fits in s rounds of compute, agreed
    // per round (period then holds the starting H, 1).
    bool period_auto = false;
    // Rounds by time (overlap, ring): a round closes every round_ms of wall
    // time whatever the steps taken (0: every H steps).
    int round_ms = 0;
    // Rounds are not a fixed number of steps: the run ends at a common cut.
    bool clocked_rounds() const { return period_auto || round_ms > 0; }
    std::string mixer = "ring";         // ring | gossip
    int n_push = 1;                     // downpour: push the accumulated update every n_push steps
    int n_fetch = 1;                    // downpour: fetch the parameters every n_fetch steps
    double alpha = 0.1;                 // easgd: moving rate α
    int tau = 1;                        // easgd: an elastic exchange every tau steps
    bool server_based() const { return name == "downpour" || name == "easgd"; }
  } algorithm;

  struct Monitor {
    double bound = 0.0;                 // 0 = "auto": 2(s+1)·H·u_max
    int sketch_buckets = 1024;
    bool snapshots = false;             // debug: write x_i at every round close
    int snapshot_every = 1;
  } monitor;

  struct Net {
    int connect_timeout_ms = 30000;
    int heartbeat_ms = 200;
    int peer_timeout_ms = 1500;         // silent this long: suspected (a view without it is formed)
    int round_timeout_ms = 120000;      // a round without progress this long: its silent-rounds peers are removed (0: off)
    int quorum_wait_ms = 60000;         // no majority: wait this long for peers to return, then exit 1
    // Start-up (ring): after this long, a majority of the configured nodes
    // that said hello to each other starts without the rest, which join when
    // they start (late start). Takes effect only below connect_timeout_ms;
    // 0: every node must be there.
    int late_start_ms = 10000;
    int shutdown_timeout_ms = 10000;
    int64_t chunk_bytes = 1 << 20;
    double inject_delay_ms = 0.0;       // emulated one-way delay in our transport
    double inject_rate_mbps = 0.0;      // emulated link rate (0 = off)
    // "curve": CurveZMQ on every link (authenticated, encrypted), keys from
    // secret_key_file and cluster.peers[].public_key; "none": plaintext.
    std::string security = "curve";
    std::string secret_key_file;        // a file, or a directory holding node-<id>.key
    std::string compression = "none";   // tensor payloads: none, bf16, int8 (net/codec.h)
  } net;

  int nodes() const { return cluster.peers.empty() ? 1 : int(cluster.peers.size()); }
  int effective_staleness() const {
    return algorithm.name == "sync" || algorithm.name == "local-sgd" || algorithm.server_based() ? 0
                                                                                                : algorithm.staleness;
  }
  nlohmann::json raw;                   // the validated document (after --set)
};

// Applies "a.b.c=value" (value parsed as JSON, else taken as a string).
void apply_override(nlohmann::json& doc, const std::string& assignment);

// Validates `doc` and fills a Config; throws ConfigError naming the path.
Config parse_config(const nlohmann::json& doc);

// Reads a file, applies overrides, validates. Errors name the file.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);

// The resolved config as JSON: every key of the schema with its typed value
// (defaults filled in), in the layout of a config file. Keys left unset are
// null (data.path, train.checkpoint, cluster.peers of a single node, a peer's
// ssh_user and workdir); monitor.bound 0 is "auto". parse_config reads it
// back to an equal Config (same config_hash). `tether config` prints it.
nlohmann::json config_to_json(const Config& cfg);

// model.layers as config_to_json writes it: every layer with every key of its
// type (`in` null when unchecked, a residual's identity shortcut []).
nlohmann::json layers_to_json(const std::vector<LayerDecl>& layers);

// `tether config --peers`: one line per entry of cluster.peers, in the
// config's order (line k is cluster.peers.k, for a --set of its fields), none
// for a single node. Fields are separated by one space:
//   ID HOST PORT SSH_PORT SSH_USER WORKDIR
// SSH_USER and WORKDIR are "-" when unset; WORKDIR is last and may hold
// spaces (`read -r id host port ssh_port user workdir` takes the rest).
// parse_config has checked every field (no blank in HOST or SSH_USER, no
// control character in WORKDIR, WORKDIR not "-").
std::string config_peer_lines(const Config& cfg);

// `tether config --get PATH`: the resolved value at PATH (dots, array indices
// as in --set: log.dir, cluster.peers.1.host), as text: a string without
// quotes, a number or true/false as JSON, null as "". A path that names no
// key, or an object or array, is a ConfigError naming it.
std::string config_get(const Config& cfg, const std::string& path);

// The run keys: every key whose value must agree between the nodes of a run
// and between a checkpoint and its --resume, as (JSON path, canonical value)
// pairs in a fixed order. Values are the resolved typed values written as JSON
// ("0.05", "64", "\"mnist\"", "true"), so an explicit default and an absent
// key give the same string. They are model.* (a declared model: model.name
// and model.layers[i] for each layer i, the layer with every key of its
// type but `in`, which only checks), data.name, data.batch_size,
// data.synthetic_*, optimizer.*, algorithm.*, monitor.bound,
// monitor.sketch_buckets, train.epochs, train.seed, train.max_steps,
// train.compute, train.synthetic_step_ms, train.checkpoint_every_steps and
// cluster.peers (id, host, port of each peer, by id). Every other key (log.*,
// device, data.path, train.threads, train.tf32, train.checkpoint,
// train.eval_every_epochs, monitor.snapshots, monitor.snapshot_every, net.*)
// may differ.
using RunKeys = std::vector<std::pair<std::string, std::string>>;
RunKeys config_run_keys(const Config& cfg);

// The JSON paths whose values differ between two sets of run keys (a path
// present in only one counts as differing), in `a`'s order then `b`'s.
std::vector<std::string> run_keys_diff(const RunKeys& a, const RunKeys& b);
std::vector<std::string> config_diff(const Config& a, const Config& b);

// Run keys that may change when a checkpoint is resumed although nodes must
// agree on them: train.max_steps and train.checkpoint_every_steps (where the
// run stops and saves, not what it computes; the schedule spans train.epochs)
// and cluster.peers (endpoints may move; the number of nodes is checked apart).
bool run_key_may_change_on_resume(const std::string& path);

// Stable 64-bit hash of config_run_keys: nodes with different hashes refuse
// each other at hello.
uint64_t config_hash(const Config& cfg);

// The hash checkpoints carried before they stored their run keys (a hash of
// raw JSON sections): compared against theirs on --resume.
uint64_t legacy_config_hash(const Config& cfg);

// Where node `node` writes its checkpoint: train.checkpoint, or
// <log.dir>/node-<node>.ckpt when it is empty. A cluster config (nodes() > 1)
// always gets a path per node: the node id goes before the file's extension
// ("ckpt/x.ckpt" -> "ckpt/x.node-1.ckpt", "ckpt/x" -> "ckpt/x.node-1"), so
// nodes that share a file system never overwrite each other's file.
std::string checkpoint_path_for_node(const Config& cfg, int node);

}  // namespace tether
