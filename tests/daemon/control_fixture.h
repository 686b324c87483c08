#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "havenoro_relay/daemon/control_server.h"
#include "test_dir.h"

namespace havenoro::daemon::testing {

/// A blocking client for tests that talk to the socket byte by byte.
class RawClient {
 public:
  explicit RawClient(const std::filesystem::path& path, int timeout_s = 10) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    connected_ =
        ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    timeval tv{timeout_s, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawClient() { ::close(fd_); }

  bool connected() const { return connected_; }

  void send(const std::string& data) {
    ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
  }

  /// The next line without its newline; empty when the peer closed or
  /// nothing came in time.
  std::optional<std::string> read_line() {
    while (buffer_.find('\n') == std::string::npos) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return std::nullopt;
      buffer_.append(buf, static_cast<size_t>(n));
    }
    auto at = buffer_.find('\n');
    std::string line = buffer_.substr(0, at);
    buffer_.erase(0, at + 1);
    return line;
  }

  /// True when the peer closes the connection: end of file, or a reset
  /// when it closed with our bytes still unread.
  bool closed_by_peer() {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

/// A ControlServer on a temporary socket, its io_context on a thread.
class ControlServerFixture : public ::testing::Test {
 protected:
  void start(CommandTable commands, ControlLimits limits = {}) {
    server_ = std::make_unique<ControlServer>(io_, socket_path(), "root",
                                              std::move(commands), limits);
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (thread_.joinable()) {
      boost::asio::post(io_, [this] {
        server_->close();
        io_.stop();
      });
      thread_.join();
    }
  }

  std::filesystem::path socket_path() const {
    return tmp_.path() / "run" / "control.sock";
  }

  /// Runs `f` on the io thread and waits for it.
  template <class F>
  auto on_io(F f) {
    std::packaged_task<decltype(f())()> task(f);
    auto result = task.get_future();
    boost::asio::post(io_, [&task] { task(); });
    return result.get();
  }

  havenoro::testing::TestDir tmp_;
  boost::asio::io_context io_;
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
};

/// A table with an "echo" command answering at once with its arguments.
inline CommandTable echo_table() {
  return {{"echo", [](const nlohmann::json& args, Responder respond) {
             respond({Result::kSuccess, "echo", args});
           }}};
}

}  // namespace havenoro::daemon::testing
