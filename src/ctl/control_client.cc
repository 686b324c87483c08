#include "havenoro_relay/ctl/control_client.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "havenoro_relay/util/fd.h"

namespace havenoro::ctl {
namespace {

using Clock = std::chrono::steady_clock;

// A reply bigger than this is not one the daemon sends.
constexpr size_t kMaxReply = 64 << 20;

class Exchange {
 public:
  Exchange(const std::filesystem::path& socket, Clock::time_point deadline)
      : socket_(socket), deadline_(deadline) {}

  void connect();
  void send_line(const std::string& line);
  std::string read_line();

 private:
  [[noreturn]] void fail(const std::string& what, int err) const {
    throw Unreachable(fmt::format(
        "cannot reach havenoro-relayd at '{}': {}", socket_.string(),
        err ? what + ": " + std::strerror(err) : what));
  }
  void wait_for(short events);

  const std::filesystem::path& socket_;
  Clock::time_point deadline_;
  util::UniqueFd fd_;
};

void Exchange::wait_for(short events) {
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline_ - Clock::now());
    if (left.count() <= 0) fail("no answer in time", 0);
    pollfd p{fd_.get(), events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n > 0) return;
    if (n < 0 && errno != EINTR) fail("poll", errno);
  }
}

void Exchange::connect() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_.native().size() >= sizeof addr.sun_path)
    fail("socket path too long", 0);
  std::memcpy(addr.sun_path, socket_.c_str(), socket_.native().size());
  fd_ = util::UniqueFd(
      ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd_.valid()) fail("socket", errno);
  // A full backlog answers EAGAIN at once: the daemon is busy accepting,
  // not gone, so try again until the deadline.
  while (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr),
                   sizeof addr) != 0) {
    if (errno == EINTR) continue;
    if (errno != EAGAIN) fail("connect", errno);
    if (Clock::now() >= deadline_) fail("connect", errno);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Exchange::send_line(const std::string& line) {
  std::string data = line + "\n";
  size_t sent = 0;
  while (sent < data.size()) {
    wait_for(POLLOUT);
    ssize_t n =
        ::send(fd_.get(), data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) fail("send", errno);
    sent += static_cast<size_t>(n);
  }
}

std::string Exchange::read_line() {
  std::string data;
  char buf[8192];
  while (data.find('\n') == std::string::npos) {
    if (data.size() > kMaxReply) fail("reply too long", 0);
    wait_for(POLLIN);
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) fail("recv", errno);
    if (n == 0) fail("the daemon closed the connection without a reply", 0);
    data.append(buf, static_cast<size_t>(n));
  }
  data.resize(data.find('\n'));
  return data;
}

}  // namespace

daemon::Reply ControlClient::call(const daemon::Request& request) const {
  Exchange exchange(socket_, Clock::now() + timeout_);
  exchange.connect();
  exchange.send_line(daemon::encode_request(request));
  std::string line = exchange.read_line();
  try {
    return daemon::parse_reply(line);
  } catch (const daemon::ProtocolError& e) {
    throw Unreachable(
        fmt::format("havenoro-relayd at '{}' sent a bad "
                    "reply: {}",
                    socket_.string(), e.what()));
  }
}

}  // namespace havenoro::ctl
