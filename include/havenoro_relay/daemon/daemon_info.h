#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "havenoro_relay/engine/engine.h"

namespace havenoro::daemon {

/// What status-get tells beyond the Engine's own status: the daemon's
/// process, its uptime across reloads (a reload makes a new Engine), the
/// last Exim reload even after applies that needed none, and the last
/// apply that failed before the Engine could record it. Thread-safe.
class DaemonInfo {
 public:
  explicit DaemonInfo(std::filesystem::path config_file);

  /// Remembers what of `outcome` the status must keep.
  void record(const engine::ApplyOutcome& outcome);

  /// Remembers how the last reload of the configuration (SIGHUP) went:
  /// `error` is empty when the new configuration was taken, else why it
  /// was refused and the old one kept. status-get shows it as `config`.
  void record_reload(const std::string& error);

  /// The Engine's status document with the daemon's keys added.
  nlohmann::json complete(nlohmann::json engine_status, unsigned long applies,
                          size_t queued) const;

  /// Seconds since the daemon started, across reloads.
  long uptime_s() const;

  /// Grows with each record() that changed what complete() adds.
  unsigned long version() const { return version_; }

 private:
  std::filesystem::path config_file_;
  pid_t pid_;
  engine::Clock::time_point started_;
  std::chrono::steady_clock::time_point started_steady_;

  mutable std::mutex mutex_;
  nlohmann::json exim_;          ///< the last reload, null before one
  nlohmann::json last_failure_;  ///< the last apply that failed, or null
  nlohmann::json reload_;        ///< the last configuration reload, or null
  std::atomic<unsigned long> version_{0};
};

/// One line that sums up a status document, for a person and for
/// systemd's STATUS=: "generation 42; 17 domains (12 relayed, 4 default,
/// 1 rejected); last apply applied 12 ms ago at ...", with a rollback's
/// pin and a refused configuration reload when the document has them.
std::string status_line(const nlohmann::json& status);

/// A time as status documents show it: UTC, ISO 8601, whole seconds.
std::string iso_time(engine::Clock::time_point t);

}  // namespace havenoro::daemon
