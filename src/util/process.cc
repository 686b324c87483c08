#include "havenoro_relay/util/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <system_error>
#include <thread>
#include <utility>

#include "havenoro_relay/util/fd.h"

extern char** environ;

namespace havenoro::util {
namespace {

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw errno_error("pipe", "");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// A child gets its three standard streams and nothing else: a descriptor
// some library opened without O_CLOEXEC (Boost.Asio's listening and
// accepted sockets) would keep the control socket alive in a queue run or
// an Exim daemon after this process is gone, and a new daemon would take
// it for a running one.
void close_inherited(posix_spawn_file_actions_t* actions) {
  posix_spawn_file_actions_addclosefrom_np(actions, 3);
}

pid_t spawn(const std::vector<std::string>& argv, Pipe& in, Pipe& out,
            Pipe& err) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.read.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err.write.get(), 2);
  close_inherited(&actions);

  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv.at(0).c_str(), &actions, nullptr, args.data(),
                       environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    errno = rc;
    throw errno_error("spawn", argv[0]);
  }
  return pid;
}

// Moves data between the child's pipes until both outputs reach end of file
// or the deadline passes. Returns false on timeout.
bool pump(UniqueFd& in, UniqueFd& out, UniqueFd& err, const std::string& input,
          ProcessResult& result,
          std::chrono::steady_clock::time_point deadline) {
  size_t written = 0;
  if (input.empty()) in = UniqueFd();
  std::array<char, 8192> buf;
  while (out.valid() || err.valid()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd fds[3] = {
        {out.get(), POLLIN, 0}, {err.get(), POLLIN, 0}, {in.get(), POLLOUT, 0}};
    int n = ::poll(fds, 3, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw errno_error("poll", "");
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      UniqueFd& fd = i == 0 ? out : err;
      ssize_t got = ::read(fd.get(), buf.data(), buf.size());
      if (got > 0) {
        (i == 0 ? result.out : result.err).append(buf.data(), got);
      } else if (got == 0 || errno != EINTR) {
        fd = UniqueFd();
      }
    }
    if (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) {
      ssize_t put =
          ::write(in.get(), input.data() + written, input.size() - written);
      if (put > 0) written += put;
      if (put < 0 && errno != EINTR && errno != EAGAIN) in = UniqueFd();
      if (written == input.size()) in = UniqueFd();
    }
  }
  return true;
}

}  // namespace

Child::Child(Child&& other) noexcept {
  *this = std::move(other);
}

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    in_ = std::move(other.in_);
    out_ = std::move(other.out_);
    err_ = std::move(other.err_);
  }
  return *this;
}

Child::~Child() {
  kill_and_reap();
}

void Child::kill_and_reap() noexcept {
  in_ = UniqueFd();
  out_ = UniqueFd();
  err_ = UniqueFd();
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

Child start_process(const std::vector<std::string>& argv, int nice) {
  Pipe in = make_pipe();
  Pipe out = make_pipe();
  Pipe err = make_pipe();
  // A child that exits early must not kill us with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  Child child;
  child.pid_ = spawn(argv, in, out, err);
  // Lowering a child's priority needs no privilege; the child runs its
  // first instructions at ours, which is no matter.
  if (nice) ::setpriority(PRIO_PROCESS, child.pid_, nice);
  // Our end of the child's stdin must not block: a blocking write of a
  // large input waits for the child to read it all, while the child waits
  // for us to read its output: both would stop until the timeout.
  ::fcntl(in.write.get(), F_SETFL, O_NONBLOCK);
  child.in_ = std::move(in.write);
  child.out_ = std::move(out.read);
  child.err_ = std::move(err.read);
  return child;
}

ProcessResult Child::finish(const std::string& input,
                            std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  ProcessResult result;
  if (!pump(in_, out_, err_, input, result, deadline)) {
    result.timed_out = true;
    ::kill(pid_, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (!result.timed_out && WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  }
  return result;
}

ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::string& input,
                          std::chrono::milliseconds timeout) {
  return start_process(argv).finish(input, timeout);
}

pid_t spawn_detached(const std::vector<std::string>& argv, int nice) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  close_inherited(&actions);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);
  // posix_spawn, not fork: a fork copies the page tables of the whole
  // daemon and holds its memory map meanwhile, stalling every thread.
  pid_t pid = -1;
  int rc =
      posix_spawn(&pid, args[0], &actions, &attributes, args.data(), environ);
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  if (rc == ENOENT || rc == EACCES || rc == ENOEXEC) return -1;
  if (rc != 0) {
    errno = rc;
    throw errno_error("posix_spawn", argv.at(0));
  }
  if (nice) ::setpriority(PRIO_PROCESS, pid, nice);
  // Reaped by a thread of its own, by pid: waiting for any child would
  // take the exit of a check's process from the thread that runs it.
  try {
    std::thread([pid] {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }).detach();
  } catch (const std::system_error&) {
    // No thread to be had: the child runs all the same and stays a zombie
    // once it ends, which is less harm than failing a caller whose work
    // (an apply) is already done.
  }
  return pid;
}

}  // namespace havenoro::util
