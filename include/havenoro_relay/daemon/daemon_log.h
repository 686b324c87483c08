#pragma once

#include <spdlog/common.h>

#include <map>
#include <mutex>
#include <string>

#include "havenoro_relay/engine/engine.h"

namespace havenoro::daemon {

/// Sends the daemon's log to standard error at `level`. Under systemd
/// (JOURNAL_STREAM or INVOCATION_ID set) lines carry no timestamp, only a
/// <N> syslog priority prefix the journal reads as the level; elsewhere
/// each line starts with the time and the level.
void setup_logging(spdlog::level::level_enum level);

/// True when standard error goes to systemd's journal.
bool under_systemd();

/// Logs the Engine's outcomes, one line per failure (docs/log-messages.md):
/// error for a change that was not applied, info for a generation applied
/// and for domains applied or removed, debug for an apply that changed
/// nothing. A rejection that persists is logged at error once and at
/// debug on later applies. Thread-safe.
class OutcomeLog {
 public:
  /// Logs one apply.
  void log(const engine::ApplyOutcome& outcome);

 private:
  void log_domain(const engine::DomainOutcome& d);
  void log_problems(const engine::ApplyOutcome& outcome);

  std::mutex mutex_;
  /// The rejection last logged at error, by domain ("" = server-wide).
  std::map<std::string, std::string> reported_;
};

}  // namespace havenoro::daemon
