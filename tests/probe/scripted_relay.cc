#include "scripted_relay.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <stdexcept>

namespace havenoro::probe::testing {
namespace {

// Every wait of the server is bounded, so a test that goes wrong cannot
// leave it blocked.
constexpr int kWaitMs = 10000;

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, kWaitMs) == 1;
}

void send_all(int fd, const std::string& text) {
  size_t sent = 0;
  while (sent < text.size()) {
    ssize_t n =
        ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

std::string first_word(const std::string& line) {
  std::string word = line.substr(0, line.find(' '));
  for (char& c : word)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return word;
}

}  // namespace

ScriptedRelay::ScriptedRelay(std::string banner,
                             std::map<std::string, std::string> replies)
    : banner_(std::move(banner)), replies_(std::move(replies)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listen_fd_ < 0 ||
      ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listen_fd_, 4) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) !=
          0) {
    throw std::runtime_error("cannot open the scripted relay's socket");
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread(&ScriptedRelay::serve, this);
}

ScriptedRelay::~ScriptedRelay() {
  // Wakes a pending poll() on the listening socket.
  ::shutdown(listen_fd_, SHUT_RDWR);
  thread_.join();
  ::close(listen_fd_);
}

std::vector<std::string> ScriptedRelay::received() {
  std::lock_guard lock(mutex_);
  return received_;
}

void ScriptedRelay::serve() {
  if (!readable(listen_fd_)) return;
  int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  converse(fd);
  ::close(fd);
}

void ScriptedRelay::converse(int fd) {
  send_all(fd, banner_);
  std::string buffer;
  char chunk[4096];
  while (readable(fd)) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return;
    buffer.append(chunk, static_cast<size_t>(n));
    for (size_t end; (end = buffer.find("\r\n")) != std::string::npos;) {
      std::string line = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      {
        std::lock_guard lock(mutex_);
        received_.push_back(line);
      }
      std::string word = first_word(line);
      auto it = replies_.find(word);
      send_all(
          fd, it != replies_.end() ? it->second : "502 5.5.2 not scripted\r\n");
      if (word == "QUIT") return;
    }
  }
}

}  // namespace havenoro::probe::testing
