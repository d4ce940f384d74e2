// Shared by the libFuzzer harnesses of test/fuzz/ (see test/fuzz/meson.build
// for the build and the run, bench/fuzz.sh for the long one).
//
// A harness is one file that feeds a decoder arbitrary bytes the way the
// production code does (same function, same file or message path) and turns
// what must never happen into a crash libFuzzer records:
//
//   #include "test/fuzz/fuzz_util.h"
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
//     tether::fuzz::Input in(data, size);
//     tether::fuzz::refused<tether::net::SomeError>([&] { decode(...); });  // any other exception: crash
//     FUZZ_CHECK(round_trip_ok, "what broke");                               // a broken property: crash
//     return 0;
//   }
//
// then one line in test/fuzz/meson.build's `harnesses` table and a few seed
// files under test/fuzz/corpus/<name>/. AddressSanitizer and UBSan (no
// recovery) turn memory errors and undefined behaviour into crashes too.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <typeinfo>
#include <vector>

namespace tether::fuzz {

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "FUZZ FAILURE: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();  // libFuzzer writes the input to crash-<sha1>
}

// FUZZ_CHECK(cond, what): a property of the decoder that this input broke.
#define FUZZ_CHECK(cond, what)                                                          \
  do {                                                                                  \
    if (!(cond))                                                                        \
      ::tether::fuzz::die(std::string(__FILE__) + ":" + std::to_string(__LINE__) +      \
                          ": check `" #cond "` failed: " + std::string(what));          \
  } while (0)

// Reads the fuzzer's bytes front to back; past the end every read gives zeros
// (so any input is a valid sequence of fields and the fuzzer needs no framing).
class Input {
 public:
  Input(const uint8_t* data, size_t size) : p_(data), left_(size) {}
  size_t left() const { return left_; }
  bool empty() const { return left_ == 0; }
  // An unsigned integer, little-endian, from the next sizeof(T) bytes.
  template <class T>
  T take() {
    T v = 0;
    for (size_t b = 0; b < sizeof(T); ++b) v = static_cast<T>(v | (static_cast<T>(byte()) << (8 * b)));
    return v;
  }
  uint8_t byte() {
    if (left_ == 0) return 0;
    --left_;
    return *p_++;
  }
  // The next n bytes (fewer at the end of the input).
  std::vector<uint8_t> bytes(size_t n) {
    n = std::min(n, left_);
    std::vector<uint8_t> out(p_, p_ + n);
    p_ += n;
    left_ -= n;
    return out;
  }
  std::vector<uint8_t> rest() { return bytes(left_); }

 private:
  const uint8_t* p_;
  size_t left_;
};

// Runs fn. An exception of one of the types Expected is the decoder's
// refusal of a bad input: refused() returns true. Any other exception that
// escapes is a bug (a library error leaking out instead of a message naming
// what is wrong): die() with its type and message. False when fn returned.
template <class F>
bool refused_any_of(F& fn) {
  fn();
  return false;
}
template <class E, class... Rest, class F>
bool refused_any_of(F& fn) {
  try {
    return refused_any_of<Rest...>(fn);
  } catch (const E&) {
    return true;
  }
}
template <class... Expected, class F>
bool refused(F&& fn) {
  try {
    return refused_any_of<Expected...>(fn);
  } catch (const std::exception& e) {
    die(std::string("unexpected exception ") + typeid(e).name() + ": " + e.what());
  } catch (...) {
    die("unexpected exception of a non-standard type");
  }
}

// A private directory for the decoders that read files: the harness writes
// the input there and calls the production loader on the path (one code
// path). Under /dev/shm when it exists (no disk I/O), else TMPDIR or /tmp;
// removed when the process exits normally.
class ScratchDir {
 public:
  static ScratchDir& get() {
    static ScratchDir dir;
    return dir;
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Writes bytes to path(name), replacing what was there; returns the path.
  std::string write(const std::string& name, const void* data, size_t bytes) const {
    const std::string p = path(name);
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("cannot write " + p + ": " + std::strerror(errno));
    const auto* c = static_cast<const unsigned char*>(data);
    size_t done = 0;
    while (done < bytes) {
      const ssize_t n = ::write(fd, c + done, bytes - done);
      if (n <= 0) die("cannot write " + p + ": " + std::strerror(errno));
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    return p;
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    return write(name, bytes.data(), bytes.size());
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

 private:
  ScratchDir() {
    std::string base = "/dev/shm";
    if (::access(base.c_str(), W_OK) != 0) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp && *tmp ? tmp : "/tmp";
    }
    std::string templ = base + "/tether-fuzz-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) die("cannot create a directory under " + base);
    dir_ = templ;
  }
  std::string dir_;
};

// True when `what` starts with `prefix` (errors name their file first).
inline bool starts_with(const std::string& what, const std::string& prefix) {
  return what.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace tether::fuzz
