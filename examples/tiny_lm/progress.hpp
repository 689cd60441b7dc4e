#pragma once
//! \file
//! Progress lines on stderr (stdout carries only the result table): one line per stage update,
//! with the time since the program started, the stage's elapsed time and its ETA.
#include <chrono>
#include <cstdio>
#include <string>

#include "model.hpp"

namespace tiny_lm {

using clock_type = std::chrono::steady_clock;

inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

inline std::string format_duration(double s) {
  if (s < 0) s = 0;
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  else
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  return buf;
}

//! A named stage of `total` work units. update() prints at most every `interval` seconds (and
//! always for the last unit); quiet stages print nothing.
class progress {
 public:
  progress(std::string name, index total, clock_type::time_point program_start, bool quiet = false,
           double interval = 5.0)
      : name_(std::move(name)), total_(total), t0_(program_start), start_(clock_type::now()),
        last_(start_), quiet_(quiet), interval_(interval) {}

  //! Reports that `done` of the total units are finished; `detail` is appended to the line.
  void update(index done, const std::string& detail = {}) {
    const auto now = clock_type::now();
    const bool last = done >= total_;
    if (quiet_ || (!last && std::chrono::duration<double>(now - last_).count() < interval_)) return;
    last_ = now;
    const double el = seconds_since(start_);
    const double eta = done > 0 ? el * double(total_ - done) / double(done) : 0.0;
    std::fprintf(stderr, "[%7.1fs] %-10s %6lld/%-6lld %5.1f%%  elapsed %-7s ETA %-7s %s\n",
                 seconds_since(t0_), name_.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), total_ > 0 ? 100.0 * double(done) / double(total_) : 100.0,
                 format_duration(el).c_str(), last ? "-" : format_duration(eta).c_str(),
                 detail.c_str());
    std::fflush(stderr);
  }
  [[nodiscard]] double elapsed() const { return seconds_since(start_); }

 private:
  std::string name_;
  index total_;
  clock_type::time_point t0_, start_, last_;
  bool quiet_;
  double interval_;
};

//! A one-off message line with the program time.
inline void note(clock_type::time_point t0, const std::string& msg) {
  std::fprintf(stderr, "[%7.1fs] %s\n", seconds_since(t0), msg.c_str());
  std::fflush(stderr);
}

}  // namespace tiny_lm
