#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "havenoro_relay/util/fd.h"

namespace havenoro::util {

/// What a finished child process left behind.
struct ProcessResult {
  int exit_code = -1;      ///< exit status, or -1 when killed by a signal
  bool timed_out = false;  ///< killed because it ran past the time limit
  std::string out;         ///< everything it wrote to standard output
  std::string err;         ///< everything it wrote to standard error
};

/// A child process started with its standard streams on pipes, waiting
/// for its input: it can do its own start-up work (Exim reads its whole
/// configuration) while the caller prepares what to give it.
class Child {
 public:
  Child() = default;
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  /// A child that was never finished is killed and reaped.
  ~Child();

  /// True until finish() or a move took the child.
  bool running() const { return pid_ > 0; }

  /// Feeds `input` to the child's standard input, closes it and collects
  /// both outputs until the child exits; kills it with SIGKILL once
  /// `timeout` (counted from this call) has passed. Once only.
  ProcessResult finish(const std::string& input,
                       std::chrono::milliseconds timeout);

 private:
  friend Child start_process(const std::vector<std::string>& argv, int nice);
  void kill_and_reap() noexcept;

  pid_t pid_ = -1;
  UniqueFd in_;  ///< our ends of the child's standard streams
  UniqueFd out_;
  UniqueFd err_;
};

/// Starts argv[0] (an absolute path; no shell, no PATH search) with argv,
/// its standard streams on pipes and no other descriptor, `nice` its nice
/// value (the daemon runs at 0). Throws std::system_error when the
/// process cannot be started.
Child start_process(const std::vector<std::string>& argv, int nice = 0);

/// Runs argv[0] (an absolute path; no shell, no PATH search) with argv,
/// feeds `input` to its standard input and collects both outputs. The child
/// is killed with SIGKILL once `timeout` has passed. Secrets must travel on
/// standard input, never in argv. Throws std::system_error when the process
/// cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::string& input,
                          std::chrono::milliseconds timeout);

/// Starts argv[0] with argv in its own session, its standard streams on
/// /dev/null and no other descriptor, and does not wait for it: for work that
/// may take long and must not hold up the caller, such as an Exim queue run. A
/// thread of its own reaps it. Returns its pid, or -1 when argv[0] could not be
/// started. `nice` is its nice value (the daemon runs at 0). Throws
/// std::system_error when no process can be made.
pid_t spawn_detached(const std::vector<std::string>& argv, int nice = 0);

}  // namespace havenoro::util
