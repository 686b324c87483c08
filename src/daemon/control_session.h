#pragma once

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <functional>
#include <memory>
#include <string>

#include "havenoro_relay/daemon/control_server.h"

namespace havenoro::daemon {

/// One client of the control socket: reads a line, answers it, reads the
/// next. A line longer than the limit gets an error reply and the
/// connection is closed; a client that stays silent (or sends half a line
/// and waits) past the idle timeout is disconnected. While a command is
/// being answered the timer does not run: the client waits for us.
class ControlSession : public std::enable_shared_from_this<ControlSession> {
 public:
  using Socket = boost::asio::local::stream_protocol::socket;

  ControlSession(Socket socket, std::shared_ptr<const CommandTable> commands,
                 ControlLimits limits,
                 std::function<void(ControlSession*)> on_close);

  /// Starts reading requests.
  void start();

  /// Closes the connection; pending replies are dropped. On the thread
  /// of the socket's io_context.
  void close();

  /// The io_context the connection runs on.
  boost::asio::io_context& io() const { return io_; }

 private:
  void read_request();
  void on_read(const boost::system::error_code& ec, size_t bytes);
  void dispatch(const std::string& line);
  void send(const Reply& reply, bool then_close);
  void arm_timer();

  boost::asio::io_context& io_;
  Socket socket_;
  std::shared_ptr<const CommandTable> commands_;
  ControlLimits limits_;
  std::function<void(ControlSession*)> on_close_;
  boost::asio::streambuf buffer_;
  boost::asio::steady_timer timer_;
  EncodedReply out_;  ///< the reply being written
  bool closed_ = false;
};

}  // namespace havenoro::daemon
