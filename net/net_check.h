// Broken-invariant and misuse checks of net/: throw with file, line and the
// streamed operands, never exit. Expected failures (peer lost, bad frame,
// time-out) use the typed errors of communicator.h instead.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tether::net {

[[noreturn]] inline void throw_check(const char* file, int line, const char* cond,
                                     const std::string& what) {
  std::ostringstream os;
  os << "net: " << what << " (check `" << cond << "` failed at " << file << ":" << line
     << ")";
  throw std::logic_error(os.str());
}

}  // namespace tether::net

// TETHER_NET_CHECK(cond, "round " << r << ...): std::logic_error naming the operands.
#define TETHER_NET_CHECK(cond, msg)                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::ostringstream tether_net_os_;                                            \
      tether_net_os_ << msg;                                                        \
      ::tether::net::throw_check(__FILE__, __LINE__, #cond, tether_net_os_.str());  \
    }                                                                               \
  } while (0)
