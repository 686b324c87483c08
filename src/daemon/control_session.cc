#include "control_session.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

#include "havenoro_relay/daemon/log_event.h"

namespace havenoro::daemon {
namespace {

namespace asio = boost::asio;

// An unknown command is echoed in the reply; a long one is cut short.
std::string shown_name(const std::string& name) {
  return name.size() <= 64 ? name : name.substr(0, 64) + "...";
}

}  // namespace

ControlSession::ControlSession(Socket socket,
                               std::shared_ptr<const CommandTable> commands,
                               ControlLimits limits,
                               std::function<void(ControlSession*)> on_close)
    : io_(static_cast<asio::io_context&>(
          asio::query(socket.get_executor(), asio::execution::context))),
      socket_(std::move(socket)),
      commands_(std::move(commands)),
      limits_(limits),
      on_close_(std::move(on_close)),
      buffer_(limits.max_request_bytes),
      timer_(socket_.get_executor()) {}

void ControlSession::start() {
  read_request();
}

void ControlSession::close() {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  boost::system::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (on_close_) on_close_(this);
}

void ControlSession::arm_timer() {
  timer_.expires_after(limits_.idle_timeout);
  timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    spdlog::debug(LogEvent("control.idle_timeout")
                      .add("after_s", self->limits_.idle_timeout.count())
                      .str());
    self->close();
  });
}

void ControlSession::read_request() {
  if (closed_) return;
  arm_timer();
  asio::async_read_until(
      socket_, buffer_, '\n',
      [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        self->on_read(ec, n);
      });
}

void ControlSession::on_read(const boost::system::error_code& ec,
                             size_t bytes) {
  timer_.cancel();
  if (ec == asio::error::not_found) {
    // The buffer is full and holds no newline: the line is too long, and
    // without its end there is no telling where the next one starts.
    spdlog::debug(LogEvent("control.bad_request")
                      .add("reason", "too long")
                      .add("limit", limits_.max_request_bytes)
                      .str());
    send(make_reply(Result::kBadRequest,
                    fmt::format("request longer than {} bytes",
                                limits_.max_request_bytes)),
         true);
    return;
  }
  if (ec) {
    close();  // the client left, or we are closing
    return;
  }
  // A streambuf's input is one contiguous block; the line is its first
  // `bytes` characters, newline included.
  const char* data = static_cast<const char*>(buffer_.data().data());
  std::string line(data, bytes - 1);
  buffer_.consume(bytes);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) {
    read_request();
    return;
  }
  dispatch(line);
}

void ControlSession::dispatch(const std::string& line) {
  Request request;
  try {
    request = parse_request(line);
  } catch (const ProtocolError& e) {
    spdlog::debug(
        LogEvent("control.bad_request").add("reason", e.what()).str());
    send(make_reply(Result::kBadRequest, e.what()), false);
    return;
  }
  auto handler = commands_->find(request.command);
  if (handler == commands_->end()) {
    spdlog::debug(LogEvent("control.unknown_command")
                      .add("command", shown_name(request.command))
                      .str());
    send(make_reply(
             Result::kUnknownCommand,
             fmt::format("unknown command '{}'", shown_name(request.command))),
         false);
    return;
  }
  // Every status page poll passes here: the line is made only when shown.
  if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug(
        LogEvent("control.request").add("command", request.command).str());
  }

  // The reply may come from the applying thread: it is posted back to the
  // socket's thread, and only the first one counts.
  auto answered = std::make_shared<std::atomic<bool>>(false);
  Responder respond = [self = shared_from_this(), answered](Reply reply) {
    if (answered->exchange(true)) return;
    auto executor = self->socket_.get_executor();
    asio::post(executor,
               [self, reply = std::move(reply)] { self->send(reply, false); });
  };
  try {
    handler->second(request.arguments, respond);
  } catch (const std::exception& e) {
    spdlog::error(LogEvent("control.handler_failed")
                      .add("command", request.command)
                      .add("error", e.what())
                      .str());
    respond(make_reply(Result::kError, e.what()));
  }
}

void ControlSession::send(const Reply& reply, bool then_close) {
  if (closed_) return;
  out_ = encode_reply_parts(reply);
  std::array<asio::const_buffer, 3> line = {
      asio::buffer(out_.head),
      out_.shared ? asio::buffer(*out_.shared) : asio::const_buffer(),
      asio::buffer(out_.tail)};
  arm_timer();  // a client that never reads its reply is dropped too
  asio::async_write(socket_, line,
                    [self = shared_from_this(), then_close](
                        boost::system::error_code ec, size_t) {
                      self->timer_.cancel();
                      if (ec || then_close) {
                        self->close();
                        return;
                      }
                      self->read_request();
                    });
}

}  // namespace havenoro::daemon
