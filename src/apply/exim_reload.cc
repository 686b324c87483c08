#include "havenoro_relay/apply/exim_reload.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>

#include "havenoro_relay/util/fd.h"
#include "havenoro_relay/util/ip_endpoint.h"
#include "havenoro_relay/util/process.h"

namespace havenoro::apply {
namespace {

using Clock = std::chrono::steady_clock;
using util::UniqueFd;

std::uintmax_t size_of(const std::filesystem::path& p) {
  std::error_code ec;
  auto size = std::filesystem::file_size(p, ec);
  return ec ? 0 : size;
}

// Whether the main log shows the daemon `pid` starting after `offset`;
// nothing when the log cannot be read.
std::optional<bool> logged_restart(const EximDaemon& d, std::uintmax_t offset,
                                   pid_t pid) {
  std::ifstream in(d.main_log);
  if (!in) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  std::string line;
  std::string needle = fmt::format("daemon started: pid={},", pid);
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string unread_log(const EximDaemon& d) {
  return fmt::format("its main log '{}' cannot be read", d.main_log.string());
}

// The state letter and the name of a process, from /proc/<pid>/stat.
struct ProcessState {
  char state = '?';
  std::string name;
};

std::optional<ProcessState> process_state(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text;
  std::getline(in, text);
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos ||
      close + 2 >= text.size()) {
    return {};
  }
  return ProcessState{text[close + 2], text.substr(open + 1, close - open - 1)};
}

// A zombie answers kill(pid, 0) but runs no more: an Exim killed after
// its parent left stays one where init does not reap (some containers).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  auto state = process_state(pid);
  return !state || state->state != 'Z';
}

bool wait_for(int fd, short events, Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - Clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(left.count())) == 1;
}

}  // namespace

std::optional<pid_t> running_exim(const EximDaemon& daemon) {
  std::ifstream in(daemon.pid_file);
  long pid = 0;
  if (!(in >> pid) || pid <= 1) return {};
  if (!alive(static_cast<pid_t>(pid))) return {};
  return static_cast<pid_t>(pid);
}

bool smtp_answers(const std::string& address,
                  std::chrono::milliseconds timeout) {
  auto endpoint = util::parse_ip_endpoint(address);
  if (!endpoint) return false;
  auto deadline = Clock::now() + timeout;
  UniqueFd fd(::socket(endpoint->address.ss_family,
                       SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  int rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&endpoint->address),
                     endpoint->length);
  if (rc != 0 && errno != EINPROGRESS) return false;
  if (!wait_for(fd.get(), POLLOUT, deadline)) return false;
  int err = 0;
  socklen_t err_len = sizeof err;
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &err_len);
  if (err != 0) return false;
  std::string banner;
  char buf[512];
  while (banner.find('\n') == std::string::npos) {
    if (!wait_for(fd.get(), POLLIN, deadline)) return false;
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) return false;
    banner.append(buf, n);
  }
  static const char kQuit[] = "QUIT\r\n";
  (void)!::write(fd.get(), kQuit, sizeof kQuit - 1);
  return banner.starts_with("220");
}

namespace {

// Waits until the daemon named by the pid file runs, has logged its start
// after `log_offset`, and answers on its port. A main log that cannot be
// read does not fail the confirmation: the pid and the port still show a
// daemon that came back, if not that it re-read its configuration.
// `what` is "reload" or "restart".
ReloadResult confirm(const EximDaemon& d, std::uintmax_t log_offset,
                     const std::string& what) {
  auto deadline = Clock::now() + d.timeout;
  std::optional<pid_t> pid;
  std::optional<bool> logged;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pid = running_exim(d);
    if (!pid) continue;
    logged = logged_restart(d, log_offset, *pid);
    if (logged.value_or(true) &&
        smtp_answers(d.probe_address, std::chrono::milliseconds(1000))) {
      ReloadResult r{
          true, true,
          fmt::format("exim pid {} came back after the {}", *pid, what)};
      if (!logged) {
        r.log_unread = true;
        r.message +=
            fmt::format(" ({}: confirmed by pid and port only)", unread_log(d));
      }
      return r;
    }
  }
  std::string why = !pid                     ? "no exim process runs"
                    : !logged.value_or(true) ? "no restart in its main log"
                                             : "its port does not answer";
  if (pid && !logged) why += "; " + unread_log(d);
  return {true, false,
          fmt::format("exim did not come back within {} ms after the {} "
                      "({})",
                      d.timeout.count(), what, why),
          pid && !logged};
}

ReloadResult run_command(const EximDaemon& d,
                         const std::vector<std::string>& argv,
                         const char* what) {
  auto offset = size_of(d.main_log);
  auto run = util::run_process(argv, "", d.timeout);
  if (run.exit_code != 0) {
    return {true, false,
            fmt::format("{} command '{}' failed (status {})", what, argv[0],
                        run.exit_code)};
  }
  return confirm(d, offset, what);
}

}  // namespace

ReloadResult reload_exim(const EximDaemon& daemon) {
  if (::access(daemon.pid_file.c_str(), F_OK) == 0 &&
      ::access(daemon.pid_file.c_str(), R_OK) != 0) {
    // Not "not running": a daemon may well run, unseen.
    return {false, false,
            fmt::format("cannot read exim's pid file '{}'",
                        daemon.pid_file.string())};
  }
  auto pid = running_exim(daemon);
  if (!pid) return {false, true, "exim is not running; nothing to reload"};
  if (!daemon.reload_command.empty()) {
    return run_command(daemon, daemon.reload_command, "reload");
  }
  auto offset = size_of(daemon.main_log);
  if (::kill(*pid, SIGHUP) != 0) {
    return {false, false, fmt::format("cannot signal exim pid {}", *pid)};
  }
  // SIGHUP re-executes the daemon under the same pid.
  return confirm(daemon, offset, "reload");
}

namespace {

// Debian's init script starts `exim4 -bd -q30m` by default. -bdf is the
// same daemon without its fork into the background: the pid it gets is
// the one to stop if it never comes up.
std::vector<std::string> default_start(const EximDaemon& d) {
  return {d.exim_binary.string(), "-C", d.exim_config.string(), "-bdf",
          "-q30m"};
}

std::string shown(const std::vector<std::string>& argv) {
  return fmt::format("{}", fmt::join(argv, " "));
}

// Without systemd: starts Exim when none runs. One that did not write its
// pid file in time never got its listening port (Exim writes it after
// binding, and retries a taken port for minutes); it is stopped.
ReloadResult start_exim(const EximDaemon& d) {
  if (auto pid = running_exim(d)) {
    return {false, false,
            fmt::format("exim pid {} still runs, so the default restart "
                        "starts no other (set exim_restart_command)",
                        *pid)};
  }
  auto argv = default_start(d);
  auto offset = size_of(d.main_log);
  pid_t started = -1;
  try {
    started = util::spawn_detached(argv);
  } catch (const std::system_error& e) {
    return {false, false, e.what()};
  }
  if (started < 0) {
    return {false, false, fmt::format("cannot start '{}'", argv[0])};
  }
  auto result = confirm(d, offset, "restart");
  auto state = process_state(started);
  if (!result.ok && running_exim(d) != started && state &&
      state->state != 'Z' && state->name.starts_with("exim")) {
    ::kill(started, SIGTERM);
  }
  return result;
}

}  // namespace

bool systemd_runs() {
  std::error_code ec;
  return std::filesystem::is_directory("/run/systemd/system", ec);
}

ReloadResult restart_exim(const EximDaemon& daemon) {
  if (!daemon.restart_command.empty()) {
    return run_command(daemon, daemon.restart_command, "restart");
  }
  bool systemd = systemd_runs();
  auto result = systemd ? run_command(daemon, kDefaultSystemdRestart, "restart")
                        : start_exim(daemon);
  result.message += fmt::format(
      " (default restart: {})",
      shown(systemd ? kDefaultSystemdRestart : default_start(daemon)));
  return result;
}

}  // namespace havenoro::apply
