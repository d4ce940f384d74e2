// Metrics: JSON lines in <log dir>/node-<id>.jsonl (field names in
// observe/metrics_schema.h, meanings in DESIGN.md), and the live progress
// line on the terminal.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "observe/format.h"           // format_duration, for the progress line
#include "observe/metrics_schema.h"   // the records' field names

namespace tether {

class MetricsLog {
 public:
  // Creates the directory if needed; appends to node-<id>.jsonl.
  MetricsLog(const std::string& dir, int node);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  // Adds "time" (seconds since the epoch) and "node", writes one line, flushes.
  void write(nlohmann::json record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  int node_;
};

// One status line: redrawn in place on a terminal, printed as plain lines
// (at most one per `min_interval_s`) when stderr is not a terminal.
class Progress {
 public:
  Progress(bool enabled, std::string prefix);
  void update(const std::string& text);
  void line(const std::string& text);   // a permanent line (ends the live one)
  void finish();

 private:
  bool enabled_, tty_;
  std::string prefix_;
  bool live_ = false;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace tether
