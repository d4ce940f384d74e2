#include "runtime/metrics.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace tether {

MetricsLog::MetricsLog(const std::string& dir, int node) : node_(node) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create log directory: " + ec.message());
  path_ = dir + "/node-" + std::to_string(node) + ".jsonl";
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) throw std::runtime_error(path_ + ": cannot open metrics file: " + std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsLog::write(nlohmann::json record) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  record["time"] = std::chrono::duration<double>(now).count();
  record["node"] = node_;
  std::string line = record.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

Progress::Progress(bool enabled, std::string prefix)
    : enabled_(enabled), tty_(::isatty(STDERR_FILENO) == 1), prefix_(std::move(prefix)) {}

void Progress::update(const std::string& text) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", prefix_.c_str(), text.c_str());
    live_ = true;
  } else if (std::chrono::duration<double>(now - last_).count() >= 5.0) {
    std::fprintf(stderr, "%s%s\n", prefix_.c_str(), text.c_str());
    last_ = now;
  }
  std::fflush(stderr);
}

void Progress::line(const std::string& text) {
  if (live_) std::fprintf(stderr, "\r\033[K");
  live_ = false;
  std::fprintf(stderr, "%s%s\n", prefix_.c_str(), text.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (live_) std::fprintf(stderr, "\n");
  live_ = false;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  long s = long(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

}  // namespace tether
