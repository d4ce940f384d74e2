// The C ABI of capi/tether.h over tether::Averager: exceptions become return
// codes and a thread-local message.
#include "capi/tether.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "net/communicator.h"
#include "runtime/averager.h"
#include "runtime/config.h"

#define TETHER_API extern "C" __attribute__((visibility("default")))

struct tether_averager {
  std::unique_ptr<tether::Averager> avg;
  std::string metrics;
};

namespace {

thread_local std::string g_error;
thread_local int g_code = TETHER_OK;

int set_error(int code, const std::string& what) {
  g_code = code;
  g_error = what;
  return code;
}

void clear_error() {
  g_code = TETHER_OK;
  g_error.clear();
}

// Runs f, mapping exceptions onto codes (most specific first).
template <typename F>
int guarded(F&& f) {
  clear_error();
  try {
    return f();
  } catch (const tether::ConfigError& e) {
    return set_error(TETHER_ERR_CONFIG, e.what());
  } catch (const tether::net::StartRefused& e) {
    return set_error(TETHER_ERR_CONFIG, e.what());
  } catch (const tether::net::NetError& e) {
    return set_error(TETHER_ERR_NET, e.what());
  } catch (const std::logic_error& e) {
    return set_error(TETHER_ERR_USAGE, e.what());
  } catch (const std::exception& e) {
    return set_error(TETHER_ERR_INTERNAL, e.what());
  } catch (...) {
    return set_error(TETHER_ERR_INTERNAL, "unknown exception");
  }
}

}  // namespace

TETHER_API tether_averager* tether_create(const char* config_path, const char* const* overrides, size_t n_overrides,
                                          int node, float* params, size_t count) {
  auto h = std::make_unique<tether_averager>();
  int rc = guarded([&] {
    if (config_path == nullptr) return set_error(TETHER_ERR_USAGE, "tether_create: config_path is NULL");
    if (overrides == nullptr && n_overrides > 0) return set_error(TETHER_ERR_USAGE, "tether_create: overrides is NULL");
    std::vector<std::string> sets;
    for (size_t i = 0; i < n_overrides; ++i) {   // i over the caller's overrides
      if (overrides[i] == nullptr) return set_error(TETHER_ERR_USAGE, "tether_create: overrides[" + std::to_string(i) + "] is NULL");
      sets.emplace_back(overrides[i]);
    }
    tether::Config cfg = tether::load_config(config_path, sets);
    h->avg = std::make_unique<tether::Averager>(cfg, node, params, count);
    return int(TETHER_OK);
  });
  return rc == TETHER_OK ? h.release() : nullptr;
}

TETHER_API int tether_step(tether_averager* a) {
  return guarded([&] {
    if (a == nullptr) return set_error(TETHER_ERR_USAGE, "tether_step: handle is NULL");
    return a->avg->step() ? int(TETHER_OK) : int(TETHER_STOPPED);
  });
}

TETHER_API int tether_finish(tether_averager* a, double test_acc) {
  return guarded([&] {
    if (a == nullptr) return set_error(TETHER_ERR_USAGE, "tether_finish: handle is NULL");
    a->avg->finish(test_acc < 0 ? std::nullopt : std::optional<double>(test_acc));
    return int(TETHER_OK);
  });
}

TETHER_API const char* tether_metrics_json(tether_averager* a) {
  int rc = guarded([&] {
    if (a == nullptr) return set_error(TETHER_ERR_USAGE, "tether_metrics_json: handle is NULL");
    a->metrics = a->avg->metrics().dump();
    return int(TETHER_OK);
  });
  return rc == TETHER_OK ? a->metrics.c_str() : nullptr;
}

TETHER_API const char* tether_last_error(void) { return g_error.c_str(); }
TETHER_API int tether_last_error_code(void) { return g_code; }

TETHER_API void tether_destroy(tether_averager* a) {
  clear_error();
  delete a;   // ~OverlapAveraging says bye to the peers when finish was not called
}
