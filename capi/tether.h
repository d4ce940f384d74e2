/* tether's averaging for training loops in any language: a C ABI over
 * runtime/averager.h (libtether.so). No C++ type crosses it.
 *
 * The caller owns one flat float buffer with every parameter of its model
 * and updates it in place (its optimizer step); tether reads and writes that
 * buffer only inside tether_create, tether_step and tether_finish, on the
 * calling thread. One handle per node; handles are independent (several
 * nodes may live in one process, one thread each).
 *
 *   float* x = ...;   // count floats
 *   tether_averager* a = tether_create("configs/local-4.json", NULL, 0, node, x, count);
 *   if (!a) { fprintf(stderr, "%s\n", tether_last_error()); return 2; }
 *   for (...) { local_step(x); if (tether_step(a) != TETHER_OK) break; }
 *   tether_finish(a, -1.0);   // every node now holds the same x
 *   tether_destroy(a);
 *
 * Return codes: TETHER_OK (0); TETHER_STOPPED (1): the cluster stopped (a
 * peer left gracefully, or with clocked rounds — algorithm.round_ms, period
 * "auto" — another node ran all its steps and the run ended at a common cut:
 * tether_finish then leaves every node with the same x), end the loop and
 * call tether_finish; a negative
 * TETHER_ERR_*: the call failed, tether_last_error() says why (the same text
 * as the tether binary: config errors name the JSON path).
 */
#ifndef TETHER_CAPI_TETHER_H
#define TETHER_CAPI_TETHER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tether_averager tether_averager;

enum {
  TETHER_OK = 0,
  TETHER_STOPPED = 1,
  TETHER_ERR_CONFIG = -2,    /* bad config file, override or node id; or the peers refused this config */
  TETHER_ERR_NET = -3,       /* a peer was lost or sent corrupt frames; start failed */
  TETHER_ERR_USAGE = -4,     /* a null handle, a call after tether_finish */
  TETHER_ERR_INTERNAL = -5   /* anything else */
};

/* Connects node `node` of the cluster in the config file at `config_path`
 * (overrides: n_overrides strings "json.path=value", as `tether train --set`;
 * may be NULL when n_overrides is 0) and agrees on the initial parameters:
 * on return `params` holds node 0's values on every node. `params` (count
 * floats) must stay valid until tether_destroy. Blocks until every peer has
 * started (net.connect_timeout_ms). Returns NULL on failure; then
 * tether_last_error() and tether_last_error_code() say why. */
tether_averager* tether_create(const char* config_path, const char* const* overrides, size_t n_overrides, int node,
                               float* params, size_t count);

/* One local step done (the caller updated params): closes a round every
 * algorithm.period steps, applies the merges that arrived, may wait. */
int tether_step(tether_averager* a);

/* Drains the rounds in flight; every node ends with the same params. Writes
 * the final metrics record; test_acc < 0: none. */
int tether_finish(tether_averager* a, double test_acc);

/* The latest metrics record as a JSON object (step, round, idle_frac,
 * rounds_in_flight, bytes_sent, ...; after tether_finish the final record).
 * Owned by the handle, valid until the next call with it. NULL on error. */
const char* tether_metrics_json(tether_averager* a);

/* The last failure's message and code on this thread ("" and TETHER_OK when
 * none). The string is valid until the next tether call on this thread. */
const char* tether_last_error(void);
int tether_last_error_code(void);

/* Stops the communicator if tether_finish was not called (peers see this
 * node leave) and frees the handle. NULL is ignored. */
void tether_destroy(tether_averager* a);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_CAPI_TETHER_H */
