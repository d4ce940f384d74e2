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
  record[field::kTime] = std::chrono::duration<double>(now).count();
  record[field::kNode] = node_;
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

}  // namespace tether
