#include "exim_fixture.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "havenoro_relay/util/fd.h"

namespace havenoro::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kExampleDir = "/etc/exim4/havenoro-relay";
constexpr const char* kEximUser = "Debian-exim";

void own_by_exim(const fs::path& dir) {
  struct passwd* pw = ::getpwnam(kEximUser);
  if (!pw) throw std::runtime_error("no user Debian-exim (exim4 installed?)");
  if (::chown(dir.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    throw std::runtime_error("chown " + dir.string());
  }
  fs::permissions(dir, fs::perms(0750));
}

std::string replace_all(std::string text, const std::string& from,
                        const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& file, const std::string& text, unsigned mode) {
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + file.string());
  }
  fs::permissions(file, fs::perms(mode));
}

int free_port() {
  util::UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot find a free port");
  }
  return ntohs(addr.sin_port);
}

bool smtp_banner(int port, std::chrono::milliseconds limit) {
  util::UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr)) {
    return false;
  }
  pollfd p{s.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return false;
  char buf[4];
  bool ok = ::read(s.get(), buf, 3) == 3 && std::string(buf, 3) == "220";
  (void)!::write(s.get(), "QUIT\r\n", 6);
  return ok;
}

EximFixture::EximFixture(EximSetup setup)
    : setup_(std::move(setup)),
      spool_(setup_.dir / "spool"),
      log_(setup_.dir / "log"),
      port_(free_port()) {
  fs::create_directories(setup_.dir);
  fs::permissions(setup_.dir, fs::perms(0755));
  for (const auto& d : {spool_, log_}) {
    fs::create_directories(d);
    own_by_exim(d);
  }
}

EximFixture::~EximFixture() {
  stop();
}

std::string EximFixture::probe_address() const {
  return fmt::format("127.0.0.1:{}", port_);
}

void EximFixture::write_config(const fs::path& file,
                               const fs::path& output_dir) const {
  std::string text = replace_all(read_text(setup_.example_config), kExampleDir,
                                 output_dir.string());
  std::string main = fmt::format(
      "\n# havenoro-bench main options\n"
      "primary_hostname = bench.havenoro.test\n"
      "spool_directory = {}\n"
      "log_file_path = {}/%slog\n"
      "pid_file_path = {}\n"
      "daemon_smtp_ports = {}\n"
      "local_interfaces = 127.0.0.1\n"
      "tls_advertise_hosts =\n"
      "smtp_accept_max = 200\n\n",
      spool_.string(), log_.string(), pid_file().string(), port_);
  std::smatch m;
  std::regex include(R"(\.include_if_exists [^\n]*\n)");
  if (!std::regex_search(text, m, include)) {
    throw std::runtime_error(setup_.example_config.string() +
                             ": no .include_if_exists line");
  }
  text.insert(m.position(0) + m.length(0), main);
  // Nothing is delivered in the bench: direct delivery goes to a closed
  // port on loopback, so that `-bt` of a domain without a relay needs no
  // DNS.
  std::regex direct(
      R"(# BEGIN direct delivery\n[\s\S]*?# END direct delivery)");
  text = std::regex_replace(
      text, direct,
      "# BEGIN direct delivery\n"
      "direct:\n  driver = manualroute\n  domains = ! +local_domains\n"
      "  transport = remote_smtp\n  route_list = * 127.0.0.1::9\n"
      "  self = send\n  no_more\n# END direct delivery");
  write_text(file, text, 0644);
}

void EximFixture::start(const fs::path& config) {
  stop();
  daemon_ = ChildProcess(
      {setup_.exim.string(), "-C", config.string(), "-bdf", "-q1h"},
      setup_.dir / "daemon.log");
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    if (!daemon_.running()) {
      throw std::runtime_error("the bench's Exim daemon exited; see " +
                               (setup_.dir / "daemon.log").string() + " and " +
                               (log_ / "paniclog").string());
    }
    if (fs::exists(pid_file()) &&
        smtp_banner(port_, std::chrono::milliseconds(500))) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("the bench's Exim daemon did not answer in 20 s");
}

void EximFixture::stop() {
  daemon_.stop();
}

size_t EximFixture::starts() const {
  std::ifstream in(main_log());
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    if (line.find("daemon started: pid=") != std::string::npos) ++n;
  }
  return n;
}

}  // namespace havenoro::bench
