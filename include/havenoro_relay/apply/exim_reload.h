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
  /// Read for the daemon's start line when it can be; when it cannot, a
  /// reload is confirmed by pid and port alone, and the result says so.
  std::filesystem::path main_log;
  std::string probe_address;  ///< "127.0.0.1:25" or "[::1]:25"
  std::chrono::milliseconds timeout{10000};
  /// Run instead of SIGHUP to the pid file's process when not empty, e.g.
  /// {"/usr/bin/systemctl", "reload", "exim4"}.
  std::vector<std::string> reload_command;
  /// Run when Exim did not come back; empty: the default restart
  /// (restart_exim).
  std::vector<std::string> restart_command;
  /// The Exim that the default restart starts when systemd does not run.
  std::filesystem::path exim_binary;
  std::filesystem::path exim_config;
};

/// The outcome of a reload or a restart.
struct ReloadResult {
  bool signalled = false;  ///< a daemon was running and was told
  bool ok = true;          ///< it came back (or there was none to reload)
  std::string message;
  /// Confirmed without the main log's start line: the log could not be
  /// read (a wrong exim_main_log, or Exim logging to syslog only).
  bool log_unread = false;
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

/// Starts Exim again and confirms as reload_exim does: with the
/// configured restart command; without one, when systemd runs, with
/// `systemctl restart exim4.service` (kDefaultSystemdRestart), otherwise
/// by starting `<exim_binary> -C <exim_config> -bdf -q30m` in a session of
/// its own, which Debian's init script would run (as -bd) by default. That
/// last one starts nothing while the pid file names a running Exim, and
/// stops what it started if it never got as far as writing its pid file
/// (its port was taken), rather than leave it retrying for minutes.
ReloadResult restart_exim(const EximDaemon& daemon);

/// The default restart under systemd.
inline const std::vector<std::string> kDefaultSystemdRestart = {
    "/usr/bin/systemctl", "restart", "exim4.service"};

/// True when systemd manages this system: /run/systemd/system exists, the
/// test of sd_booted(3).
bool systemd_runs();

/// True when an SMTP server at `address` sends a 220 banner in time.
bool smtp_answers(const std::string& address,
                  std::chrono::milliseconds timeout);

}  // namespace havenoro::apply
