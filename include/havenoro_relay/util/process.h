#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace havenoro::util {

/// What a finished child process left behind.
struct ProcessResult {
  int exit_code = -1;      ///< exit status, or -1 when killed by a signal
  bool timed_out = false;  ///< killed because it ran past the time limit
  std::string out;         ///< everything it wrote to standard output
  std::string err;         ///< everything it wrote to standard error
};

/// Runs argv[0] (an absolute path; no shell, no PATH search) with argv,
/// feeds `input` to its standard input and collects both outputs. The child
/// is killed with SIGKILL once `timeout` has passed. Secrets must travel on
/// standard input, never in argv. Throws std::system_error when the process
/// cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::string& input,
                          std::chrono::milliseconds timeout);

/// Starts argv[0] with argv in its own session and does not wait for it:
/// for work that may take long and must not hold up the caller, such as an
/// Exim queue run. The child is re-parented to init, so no zombie stays.
/// Returns its pid, or -1 when argv[0] could not be started. Throws
/// std::system_error when no process can be made.
pid_t spawn_detached(const std::vector<std::string>& argv);

}  // namespace havenoro::util
