// The parameter-server baselines of the seed's comparison (DESIGN.md,
// "Baselines"): Downpour SGD (Dean et al. 2012) and asynchronous Elastic
// Averaging SGD (Zhang, Choromanska, LeCun 2015), behind the same Averaging
// seam as the overlap algorithm, over the same transport and wire protocol.
// The parameter vector (the centre x̃ for EASGD) is sharded over the nodes;
// each node serves one shard on its communicator's I/O thread
// (net/shard_server.h) and trains as a worker on the trainer thread. No
// barrier anywhere during training.
//
//   downpour, per local step t (the trainer has updated x_i):
//       every n_push steps:  push u = x_i − b ; b = x_i         (b: x_i as last sent or fetched)
//       every n_fetch steps: fetch x̃ ; x_i = x̃ + (x_i − b) ; b = x̃   (the unpushed part kept)
//     servers: x̃ += u as pushes arrive.
//   easgd, every tau steps:
//       fetch x̃ ; d = α(x_i − x̃) ; x_i −= d ; push d      servers: x̃ += d
//   every `period` steps a round closes: x_i goes to on_close (snapshots for
//   exact distances) and the metrics' displacement ‖x_i − b‖ (downpour) or
//   ‖x_i − x̃‖ at the last exchange (easgd); its CountSketch goes to every
//   other node (the service's kNodeSketch), and the latest round whose
//   sketches from every node are in gives the estimated pairwise distances
//   (max_pair_dist; no bound, no throttle).
//   at the end: every unpushed update is pushed and acknowledged, a ring
//   round (a barrier), every node fetches x̃ (the same bits everywhere: no
//   server changes any more), x_i = x̃, a second barrier; then bye.
//
// Gradient delay (measured, not assumed): for each push, the server updates
// applied between this worker's last fetch and the push; the metrics report
// the mean (grad_delay). It grows with N: N − 1 for n_push = n_fetch = 1.
//
// Failure: a shard server or worker that falls silent or fails stops every
// node with net::PeerLost naming it (the trainer checkpoints, exit 1); one
// that leaves gracefully (interrupted) stops the others as if interrupted.
// There is no common cut: an interrupted run's checkpoints hold each node's
// own x_i at its own step.
#pragma once

#include <functional>
#include <memory>

#include "net/communicator.h"
#include "net/shard_server.h"
#include "runtime/averaging.h"

namespace tether {

struct ServerOptions {
  int node = 0;
  bool easgd = false;          // else downpour
  int n_push = 1, n_fetch = 1;  // downpour
  double alpha = 0.1;           // easgd
  int tau = 1;                  // easgd
  int period = 1;               // steps per round (snapshots, metrics)
  int peer_timeout_ms = 3000;   // the longest wait for a server's reply or a barrier
  int shutdown_timeout_ms = 10000;
  uint64_t first_round = 0;     // the communicator's first round (the end's barriers)
  uint64_t sketch_floats = 0;   // CommOptions::sketch_floats: sketch_buckets + kSketchTail (0: no sketches)
  int sketch_buckets = 1024;
  uint64_t sketch_seed = 1;
  std::function<void(uint64_t round, const float* x, size_t count, double delta_norm)> on_close;
};

// The algorithm on `comm`, whose CommOptions::service is `service` (made for
// comm's node count and params->count()); constructs and starts it.
std::unique_ptr<Averaging> make_server_averaging(ServerOptions o, std::unique_ptr<net::Communicator> comm,
                                                 std::shared_ptr<net::ShardService> service, ParamStore* params,
                                                 std::unique_ptr<ParamStore> owned = nullptr);

// make_averaging's branch for algorithm.name downpour / easgd: `a` and `comm`
// as make_averaging mapped them from the Config (node, period, time-outs,
// snapshots; peers, heartbeats, hello), `params` the model's arena.
std::unique_ptr<Averaging> make_server_averaging(const Config& cfg, const AveragingOptions& a,
                                                 net::CommOptions comm, std::unique_ptr<ParamStore> params);

}  // namespace tether
