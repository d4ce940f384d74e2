// For test processes that fork: a child inherits doctest's crash handlers,
// which print a copy of the parent's summary when the child dies (garbling
// CI logs). Children reset them first.
#pragma once

#include <csignal>
#include <initializer_list>

namespace tether::testing {

inline void reset_crash_signals_in_child() {
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, SIG_DFL);
}

}  // namespace tether::testing
