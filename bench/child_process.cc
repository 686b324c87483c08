#include "child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

extern char** environ;

namespace havenoro::bench {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what, int err) {
  throw std::system_error(err, std::generic_category(), what);
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  return args;
}

// Spawns with stdin from /dev/null and stdout, stderr to `out_fd`.
pid_t spawn(const std::vector<std::string>& argv, int out_fd, bool session) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (session) posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  auto args = c_argv(argv);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv.at(0).c_str(), &actions, &attr, args.data(),
                       environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) fail("spawn " + argv[0], rc);
  return pid;
}

int dev_null() {
  int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail("open /dev/null", errno);
  return fd;
}

// Waits until `fd` (a pidfd or a pipe) is readable or the deadline passes.
bool wait_readable(int fd, Clock::time_point deadline) {
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) fail("poll", errno);
  }
}

int exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TimedRun run_timed(const std::vector<std::string>& argv,
                   std::chrono::milliseconds limit, bool capture) {
  TimedRun run;
  int fds[2] = {-1, -1};
  if (capture && ::pipe2(fds, O_CLOEXEC) != 0) fail("pipe", errno);
  int out = capture ? fds[1] : dev_null();
  auto t0 = Clock::now();
  auto deadline = t0 + limit;
  pid_t pid = spawn(argv, out, false);
  ::close(out);
  int pidfd = pidfd_open(pid);
  if (capture) {
    char buf[8192];
    while (wait_readable(fds[0], deadline)) {
      ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      run.out.append(buf, n);
    }
    ::close(fds[0]);
  }
  if (!wait_readable(pidfd, deadline)) {
    run.timed_out = true;
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  run.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (pidfd >= 0) ::close(pidfd);
  run.exit_code = run.timed_out ? -1 : exit_code(status);
  return run;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::filesystem::path& log) {
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail("open " + log.string(), errno);
  pid_ = spawn(argv, fd, true);
  ::close(fd);
  pidfd_ = pidfd_open(pid_);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept {
  *this = std::move(other);
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = other.pid_;
    pidfd_ = other.pidfd_;
    status_ = other.status_;
    reaped_ = other.reaped_;
    other.pid_ = -1;
    other.pidfd_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  stop();
}

bool ChildProcess::running() {
  if (pid_ < 0 || reaped_) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

int ChildProcess::wait(std::chrono::milliseconds limit) {
  if (pid_ < 0) return -1;
  if (!reaped_ && pidfd_ >= 0 && !wait_readable(pidfd_, Clock::now() + limit)) {
    return -1;
  }
  running();
  return reaped_ ? exit_code(status_) : -1;
}

void ChildProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ < 0) return;
  // The group is this child's own session: its id is the child's pid.
  ::kill(-pid_, SIGTERM);
  if (!reaped_ && wait(grace) < 0 && !reaped_) {
    ::kill(-pid_, SIGKILL);
    wait(std::chrono::seconds(5));
  }
  // Children that outlived the leader still belong to the group.
  ::kill(-pid_, SIGKILL);
  if (pidfd_ >= 0) ::close(pidfd_);
  pid_ = -1;
  pidfd_ = -1;
}

pid_t spawn_async(const std::vector<std::string>& argv,
                  const std::filesystem::path& log) {
  int out = log.empty()
                ? dev_null()
                : ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                         0644);
  if (out < 0) fail("open " + log.string(), errno);
  pid_t pid = spawn(argv, out, false);
  ::close(out);
  return pid;
}

int collect(pid_t pid, Clock::time_point deadline) {
  int pidfd = pidfd_open(pid);
  bool done = pidfd < 0 || wait_readable(pidfd, deadline);
  if (pidfd >= 0) ::close(pidfd);
  if (!done) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return done ? exit_code(status) : -1;
}

}  // namespace havenoro::bench
