// Argument checks of the CPU backend: throw with the file, line and operands,
// never exit. Internal to cpu/.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tether::cpu {

[[noreturn]] inline void throw_invalid(const char* file, int line,
                                       const char* cond, const std::string& what) {
  std::ostringstream os;
  os << "cpu backend: " << what << " (check `" << cond << "` failed at " << file
     << ":" << line << ")";
  throw std::invalid_argument(os.str());
}

}  // namespace tether::cpu

// TETHER_CPU_ARG(cond, "name " << value ...): std::invalid_argument on a bad
// argument, the message built from the streamed operands.
#define TETHER_CPU_ARG(cond, msg)                                          \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::ostringstream tether_cpu_os_;                                   \
      tether_cpu_os_ << msg;                                               \
      ::tether::cpu::throw_invalid(__FILE__, __LINE__, #cond,              \
                                   tether_cpu_os_.str());                  \
    }                                                                      \
  } while (0)
