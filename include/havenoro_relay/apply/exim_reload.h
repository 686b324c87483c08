#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

namespace havenoro::apply {

/// Where the running Exim daemon is and how to tell it came back.
struct EximDaemon {
  std::filesystem::path pid_file;
  std::filesystem::path main_log;  ///< may not exist; then not consulted
  std::string probe_address;       ///< "127.0.0.1:25" or "[::1]:25"
  std::chrono::milliseconds timeout{10000};
};

/// The outcome of a reload.
struct ReloadResult {
  bool signalled = false;  ///< a daemon was running and got SIGHUP
  bool ok = true;          ///< it came back (or there was none to reload)
  std::string message;
};

/// The pid of the running daemon, from its pid file, if it runs.
std::optional<pid_t> running_exim(const EximDaemon& daemon);

/// Sends SIGHUP to the daemon and confirms that it came back: Exim has no
/// readiness notification, so the same pid must still run, the main log
/// must say the daemon started again after the signal, and the SMTP port
/// must answer with a 220 banner, all within the timeout. No daemon
/// running is not a failure: the next one to start reads the new files.
ReloadResult reload_exim(const EximDaemon& daemon);

/// True when an SMTP server at `address` sends a 220 banner in time.
bool smtp_answers(const std::string& address,
                  std::chrono::milliseconds timeout);

}  // namespace havenoro::apply
