// Asynchronous SGD without gradient delay: the anchor + displacement
// algorithm of DESIGN.md on top of a net::Communicator.
//
// Per node i: local parameters x_i (the model's arena), the anchor x̄
// (identical bits on every node, ring mixer), x_prev (x_i at the last round
// close plus every merge correction applied since), and the deltas of the
// rounds in flight.
//
//   every local step:  the trainer updates x_i
//   every H steps, round r closes:
//       Δ_i^r = x_i − x_prev ; x_prev = x_i
//       submit Δ_i^r (ring) or the snapshot x_i (gossip), with a CountSketch
//       of x_i and the largest ‖Δ‖ seen, to the mixer (non-blocking)
//       while rounds in flight > s: wait                    (idle, measured)
//       while the monitor throttles this node: wait for the next merge
//   when the mixer delivers round r (in order, applied between steps):
//       c = mixed^r − submitted^r ; x_i += c ; x_prev += c
//       ring: x̄ += mixed^r
//   at the end: drain, then (ring) x_i = x̄ on every node.
//
// s = 0, H = 1 is synchronous data-parallel SGD. Failure: a silent peer
// surfaces as net::PeerLost from after_step/finish (the trainer checkpoints
// and the node exits non-zero).
#pragma once

#include <atomic>
#include <memory>

#include "models/model.h"
#include "runtime/config.h"
#include "runtime/trainer.h"

namespace tether {

std::unique_ptr<Averaging> make_averaging(const Config& cfg, int node, Model& model,
                                          const std::atomic<bool>* stop);

}  // namespace tether
