// Running the tether binary from a test: paths, temporary directories and
// commands with their exit status and output.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace tether::testing {

inline std::string build_root() {
  const char* b = std::getenv("TETHER_BUILD_ROOT");
  return b != nullptr ? b : "build";
}
inline std::string source_root() {
  const char* s = std::getenv("TETHER_SOURCE_ROOT");
  return s != nullptr ? s : ".";
}
inline std::string tether_bin() { return build_root() + "/tether"; }

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::string tmpl = (std::filesystem::temp_directory_path() / ("tether-" + tag + "-XXXXXX")).string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(file(name), std::ios::binary) << content;
    return file(name);
  }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;   // stdout and stderr together
};

// Runs `cmd` through the shell with a hard time limit; output is captured.
inline CommandResult run_command(const std::string& cmd, int timeout_s = 300) {
  CommandResult r;
  std::string full = "timeout -k 5 " + std::to_string(timeout_s) + " " + cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace tether::testing
