// Progress reporting of the training commands: a bar with rate, ETA and the recent mean loss
// on a terminal, plain lines otherwise, and metrics as JSON lines.
#pragma once

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "kadapter/core/error.hpp"

namespace kadapter::cli {

/// A progress line for a loop of known length. On a terminal it redraws one line with a
/// bar; elsewhere (logs, CI) it prints a plain line every `every` steps. Its "recent loss" is
/// the mean of the last steps' losses, exponentially weighted (weight 0.9 per step back, so
/// about the last 10 steps) and exact from the first step on (the weights are normalised).
class Progress {
 public:
  Progress(std::string what, long long total, long long start = 0, long long every = 50)
      : what_(std::move(what)), total_(total), done_(start), first_(start), every_(every),
        tty_(::isatty(STDERR_FILENO) != 0), t0_(std::chrono::steady_clock::now()) {}

  /// One step done with @p loss.
  void step(double loss) {
    ++done_;
    weighted_ = 0.9 * weighted_ + 0.1 * loss;
    weights_ = 0.9 * weights_ + 0.1;
    const double recent = weighted_ / weights_;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double rate = static_cast<double>(done_ - first_) / std::max(elapsed, 1e-9);
    const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0.0;
    if (tty_) {
      const int width = 30;
      const int filled = total_ > 0 ? static_cast<int>(width * done_ / total_) : 0;
      std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld %.2f it/s ETA %s recent loss %.4f ", what_.c_str(),
                   filled, "##############################", width - filled, "", done_, total_,
                   rate, clock(eta).c_str(), recent);
      if (done_ == total_) std::fputc('\n', stderr);
    } else if (done_ % every_ == 0 || done_ == total_) {
      std::fprintf(stderr, "%s %lld/%lld  %.2f it/s  ETA %s  recent loss %.4f\n", what_.c_str(), done_,
                   total_, rate, clock(eta).c_str(), recent);
    }
    std::fflush(stderr);
  }

  /// A line of its own (an evaluation result) between steps: on a terminal it replaces the
  /// bar, which the next step draws again below it.
  void note(const std::string& line) const {
    std::fprintf(stderr, tty_ ? "\r\033[K%s\n" : "%s\n", line.c_str());
    std::fflush(stderr);
  }

 private:
  static std::string clock(double s) {
    char buf[32];
    const long long t = static_cast<long long>(s + 0.5);
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, (t / 60) % 60, t % 60);
    return buf;
  }
  std::string what_;
  long long total_, done_, first_, every_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
  double weighted_ = 0, weights_ = 0;  // the recent loss is weighted_ / weights_
};

/// Appends one JSON object per line to a metrics file (flushed each time).
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : path_(path), out_(path, std::ios::app) {
    if (!out_) throw Error(path + ": cannot open the metrics log for writing");
  }
  void write(const nlohmann::json& j) {
    out_ << j.dump() << '\n';
    out_.flush();
    if (!out_) throw Error(path_ + ": writing the metrics log failed");
  }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace kadapter::cli
