/* The C ABI (capi/tether.h) from a C program: two nodes as two threads of one
 * process on 127.0.0.1, synchronous averaging (s = 0, H = 1) of a "training"
 * whose closed form is known, and the ABI's errors.
 *
 * Node i's local step pulls x towards its own target t_i:
 *     x <- x - lr (x - t_i)
 * Averaged every step, the merged update is x <- x - lr (x - t̄) with
 * t̄ = (t_0 + t_1) / 2, so after k steps, from node 0's initial x0 (the
 * averaging agrees on node 0's values at create):
 *     x_k = t̄ + (1 - lr)^k (x0 - t̄)
 * Both nodes must end with identical bits, equal to that to 1e-5 relative.
 *
 * Prints doctest's summary line, which scripts/test_summary.py counts. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "capi/tether.h"

enum { kCount = 1000, kSteps = 30 };
static const float kLr = 0.1f;

static int g_checks = 0, g_failed = 0;

#define CHECK(cond, ...)                                                 \
  do {                                                                   \
    ++g_checks;                                                          \
    if (!(cond)) {                                                       \
      ++g_failed;                                                        \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                      \
      fprintf(stderr, "\n");                                             \
    }                                                                    \
  } while (0)

/* Two distinct ports the OS says are free on 127.0.0.1 (bound to 0 together,
 * then released). */
static void free_ports(int* ports, int n) {
  int fds[8];
  for (int i = 0; i < n; ++i) {   /* i over the ports asked for (n <= 8) */
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fds[i] < 0 || bind(fds[i], (struct sockaddr*)&a, sizeof a) != 0 ||
        getsockname(fds[i], (struct sockaddr*)&a, &len) != 0) {
      perror("free_ports");
      exit(1);
    }
    ports[i] = ntohs(a.sin_port);
  }
  for (int i = 0; i < n; ++i) close(fds[i]);
}

static char g_config[256], g_logdir[64];

static float target(int node, int i) { return node == 0 ? 0.01f * (float)(i % 17) : -0.02f * (float)(i % 11) + 1.0f; }
static float initial(int node, int i) { return node == 0 ? 0.5f - 0.001f * (float)i : 3.0f; }

struct Node {
  int id;
  float x[kCount];
  int create_ok, step_rc, finish_rc;
  char error[512];
  char metrics[4096];
  float x_after_create0;
};

static void* run_node(void* arg) {
  struct Node* n = arg;
  for (int i = 0; i < kCount; ++i) n->x[i] = initial(n->id, i);   /* i over the buffer */
  tether_averager* a = tether_create(g_config, NULL, 0, n->id, n->x, kCount);
  n->create_ok = a != NULL;
  if (!a) {
    snprintf(n->error, sizeof n->error, "%s", tether_last_error());
    return NULL;
  }
  n->x_after_create0 = n->x[0];
  n->step_rc = TETHER_OK;
  for (int k = 0; k < kSteps && n->step_rc == TETHER_OK; ++k) {   /* k over the steps */
    for (int i = 0; i < kCount; ++i) n->x[i] -= kLr * (n->x[i] - target(n->id, i));
    n->step_rc = tether_step(a);
  }
  n->finish_rc = tether_finish(a, -1.0);
  if (n->finish_rc != TETHER_OK) snprintf(n->error, sizeof n->error, "%s", tether_last_error());
  const char* m = tether_metrics_json(a);
  snprintf(n->metrics, sizeof n->metrics, "%s", m ? m : "");
  tether_destroy(a);
  return NULL;
}

static void test_two_nodes(void) {
  static struct Node nodes[2];
  pthread_t th[2];
  for (int r = 0; r < 2; ++r) {   /* r over the nodes */
    nodes[r].id = r;
    pthread_create(&th[r], NULL, run_node, &nodes[r]);
  }
  for (int r = 0; r < 2; ++r) pthread_join(th[r], NULL);
  for (int r = 0; r < 2; ++r) {
    CHECK(nodes[r].create_ok, "node %d: tether_create failed: %s", r, nodes[r].error);
    CHECK(nodes[r].step_rc == TETHER_OK, "node %d: tether_step returned %d", r, nodes[r].step_rc);
    CHECK(nodes[r].finish_rc == TETHER_OK, "node %d: tether_finish returned %d: %s", r, nodes[r].finish_rc,
          nodes[r].error);
    CHECK(strstr(nodes[r].metrics, "\"event\":\"final\"") != NULL, "node %d: metrics %s", r, nodes[r].metrics);
    CHECK(strstr(nodes[r].metrics, "\"steps\":30") != NULL, "node %d: metrics %s", r, nodes[r].metrics);
  }
  if (!nodes[0].create_ok || !nodes[1].create_ok) return;
  /* create agreed on node 0's initial values */
  CHECK(nodes[1].x_after_create0 == initial(0, 0), "node 1 started from %g, node 0's x0 is %g",
        nodes[1].x_after_create0, initial(0, 0));
  CHECK(memcmp(nodes[0].x, nodes[1].x, sizeof nodes[0].x) == 0, "the nodes' final parameters differ");
  double err = 0, norm = 0;
  const double decay = pow(1.0 - kLr, kSteps);
  for (int i = 0; i < kCount; ++i) {
    const double tbar = 0.5 * ((double)target(0, i) + (double)target(1, i));
    const double expect = tbar + decay * ((double)initial(0, i) - tbar);
    err += (nodes[0].x[i] - expect) * (nodes[0].x[i] - expect);
    norm += expect * expect;
  }
  CHECK(sqrt(err / norm) < 1e-5, "relative distance to the closed form %g", sqrt(err / norm));
}

static void test_errors(void) {
  float x[4] = {0};
  tether_averager* a = tether_create("/nonexistent/config.json", NULL, 0, 0, x, 4);
  CHECK(a == NULL, "a missing config file was accepted");
  CHECK(tether_last_error_code() == TETHER_ERR_CONFIG, "code %d", tether_last_error_code());
  CHECK(strstr(tether_last_error(), "cannot open config file") != NULL, "message: %s", tether_last_error());

  const char* bad[] = {"algorithm.staleness=-1"};
  a = tether_create(g_config, bad, 1, 0, x, 4);
  CHECK(a == NULL, "a bad override was accepted");
  CHECK(tether_last_error_code() == TETHER_ERR_CONFIG, "code %d", tether_last_error_code());
  CHECK(strstr(tether_last_error(), "algorithm.staleness: expected an integer in 0..64") != NULL, "message: %s",
        tether_last_error());

  a = tether_create(g_config, NULL, 0, 2, x, 4);
  CHECK(a == NULL, "node 2 of a 2-node cluster was accepted");
  CHECK(strstr(tether_last_error(), "node 2: the config has nodes 0..1") != NULL, "message: %s", tether_last_error());

  CHECK(tether_step(NULL) == TETHER_ERR_USAGE, "tether_step(NULL)");
  CHECK(strstr(tether_last_error(), "NULL") != NULL, "message: %s", tether_last_error());
  CHECK(tether_metrics_json(NULL) == NULL, "tether_metrics_json(NULL)");
  tether_destroy(NULL);
  CHECK(tether_last_error_code() == TETHER_OK, "tether_destroy(NULL) left code %d", tether_last_error_code());
}

int main(void) {
  snprintf(g_logdir, sizeof g_logdir, "/tmp/tether-capi-XXXXXX");
  if (!mkdtemp(g_logdir)) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(g_config, sizeof g_config, "%s/config.json", g_logdir);
  int ports[2];
  free_ports(ports, 2);
  FILE* f = fopen(g_config, "w");
  if (!f) {
    perror(g_config);
    return 1;
  }
  fprintf(f,
          "{\"cluster\": {\"peers\": [{\"id\": 0, \"host\": \"127.0.0.1\", \"port\": %d},\n"
          "                           {\"id\": 1, \"host\": \"127.0.0.1\", \"port\": %d}]},\n"
          " \"algorithm\": {\"name\": \"sync\", \"period\": 1},\n"
          " \"net\": {\"security\": \"none\"},\n"
          " \"log\": {\"dir\": \"%s/log\", \"every_steps\": 10}}\n",
          ports[0], ports[1], g_logdir);
  fclose(f);
  int cases = 0, failed_cases = 0, before;
  before = g_failed; test_two_nodes(); ++cases; failed_cases += g_failed != before;
  before = g_failed; test_errors(); ++cases; failed_cases += g_failed != before;
  printf("%d checks, %d failed\n", g_checks, g_failed);
  printf("[doctest] test cases: %d | %d passed | %d failed | 0 skipped\n", cases, cases - failed_cases, failed_cases);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_logdir);
  if (g_failed == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_logdir);
  return g_failed ? 1 : 0;
}
