#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace havenoro::bench {

/// A finished short-lived process, timed from spawn to exit.
struct TimedRun {
  double ms = 0;
  int exit_code = -1;  ///< -1: killed by a signal or by the time limit
  bool timed_out = false;
  std::string out;  ///< stdout and stderr together, when captured
};

/// Runs argv (argv[0] an absolute path) with stdin from /dev/null, waits
/// for it without polling (a pidfd), and kills it when `limit` passes.
/// Output goes to /dev/null unless `capture`. Throws std::system_error
/// when it cannot be started.
TimedRun run_timed(const std::vector<std::string>& argv,
                   std::chrono::milliseconds limit, bool capture = false);

/// A process started in a session of its own, so that stop() ends it and
/// every child it forked (Exim's daemon forks for each connection).
class ChildProcess {
 public:
  ChildProcess() = default;
  /// Starts argv with stdout and stderr appended to `log`.
  ChildProcess(const std::vector<std::string>& argv,
               const std::filesystem::path& log);
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  /// Stops the process group (see stop()).
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running();
  /// SIGTERM to the group, SIGKILL after `grace`; reaps the leader.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  /// Waits up to `limit` for the process to exit by itself; its exit
  /// status, or -1 if it still runs (or was killed by a signal).
  int wait(std::chrono::milliseconds limit);

 private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int status_ = -1;
  bool reaped_ = false;
};

/// Spawns argv without waiting, stdout and stderr appended to `log`
/// (/dev/null when empty); collect it with collect(). For the save hooks
/// of a burst, fired back to back.
pid_t spawn_async(const std::vector<std::string>& argv,
                  const std::filesystem::path& log = {});

/// Waits for a process from spawn_async() up to `deadline`; its exit
/// status, or -1 if it was killed (it is killed when the deadline passes).
int collect(pid_t pid, std::chrono::steady_clock::time_point deadline);

}  // namespace havenoro::bench
