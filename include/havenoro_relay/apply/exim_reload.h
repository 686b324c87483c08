#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace havenoro::apply {

/// Where the running Exim daemon is, how to reload or restart it, and how
/// to tell that it came back.
struct EximDaemon {
  std::filesystem::path pid_file;
  std::filesystem::path main_log;  ///< may not exist; then not consulted
  std::string probe_address;       ///< "127.0.0.1:25" or "[::1]:25"
  std::chrono::milliseconds timeout{10000};
  /// Run instead of SIGHUP to the pid file's process when not empty, e.g.
  /// {"/usr/bin/systemctl", "reload", "exim4"}.
  std::vector<std::string> reload_command;
  /// Run when Exim did not come back; empty: Exim cannot be restarted.
  std::vector<std::string> restart_command;
};

/// The outcome of a reload or a restart.
struct ReloadResult {
  bool signalled = false;  ///< a daemon was running and was told
  bool ok = true;          ///< it came back (or there was none to reload)
  std::string message;
};

/// The pid of the running daemon, from its pid file, if it runs.
std::optional<pid_t> running_exim(const EximDaemon& daemon);

/// Tells the daemon to re-read its configuration and confirms that it came
/// back: Exim has no readiness notification, so the daemon named by the
/// pid file must run, the main log must say it started again after the
/// reload, and the SMTP port must answer with a 220 banner, all within the
/// timeout. No daemon running is not a failure: the next one to start
/// reads the new files.
ReloadResult reload_exim(const EximDaemon& daemon);

/// Runs the restart command and confirms as reload_exim does.
ReloadResult restart_exim(const EximDaemon& daemon);

/// True when an SMTP server at `address` sends a 220 banner in time.
bool smtp_answers(const std::string& address,
                  std::chrono::milliseconds timeout);

}  // namespace havenoro::apply
