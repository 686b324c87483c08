#include "relay_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace havenoro::probe::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const fs::path kRelayScript =
    fs::path(HAVENORO_SOURCE_DIR) / "tests/support/relay_server.py";
// Debian's interpreter has aiosmtpd; one earlier on PATH may not.
constexpr const char* kPython = "/usr/bin/python3";
constexpr std::chrono::seconds kStartTimeout{15};
constexpr std::chrono::seconds kStopTimeout{5};
constexpr std::chrono::milliseconds kPollInterval{20};

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> relay_argv(const fs::path& dir, uint16_t port,
                                    const RelayOptions& o) {
  std::vector<std::string> argv = {kPython,        kRelayScript,
                                   "--name",       "probe-relay",
                                   "--port",       std::to_string(port),
                                   "--mode",       o.mode,
                                   "--mechanisms", o.mechanisms,
                                   "--record",     dir / "record.jsonl",
                                   "--events",     dir / "events.jsonl",
                                   "--ready-file", dir / "ready"};
  if (!o.cert.empty())
    argv.insert(argv.end(), {"--cert", o.cert, "--key", o.key});
  if (!o.auth_reply.empty())
    argv.insert(argv.end(), {"--auth-reply", o.auth_reply});
  return argv;
}

pid_t spawn(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(),
                       environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  return pid;
}

bool wait_exit(pid_t pid, Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(kPollInterval);
  }
  return false;
}

}  // namespace

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bool ok = fd >= 0 &&
            ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) throw std::runtime_error("cannot find a free port");
  return ntohs(addr.sin_port);
}

RelayProcess::RelayProcess(const fs::path& dir, const RelayOptions& options)
    : dir_(dir), port_(free_port()) {
  fs::create_directories(dir_);
  pid_ = spawn(relay_argv(dir_, port_, options), dir_ / "relay.log");
  wait_until_ready();
}

void RelayProcess::wait_until_ready() {
  auto deadline = Clock::now() + kStartTimeout;
  while (!fs::exists(dir_ / "ready")) {
    bool exited = ::waitpid(pid_, nullptr, WNOHANG) == pid_;
    if (exited || Clock::now() > deadline) {
      if (!exited) ::kill(pid_, SIGKILL), ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
      throw std::runtime_error("relay did not start: " +
                               read_text(dir_ / "relay.log"));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

RelayProcess::~RelayProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (!wait_exit(pid_, Clock::now() + kStopTimeout)) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::vector<nlohmann::json> RelayProcess::auth_events() const {
  std::vector<nlohmann::json> events;
  std::ifstream in(dir_ / "events.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) events.push_back(nlohmann::json::parse(line));
  }
  return events;
}

}  // namespace havenoro::probe::testing
