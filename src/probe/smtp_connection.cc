#include "smtp_connection.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

namespace havenoro::probe {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

tcp::socket& SmtpConnection::socket() {
  return tls_ ? tls_->next_layer() : plain_;
}

// Each operation is started with a handler that stores its result, then
// this runs the io_context until the operation is done or the deadline
// passes. On expiry the socket's pending operation is cancelled, which
// ends it with operation_aborted; the socket stays open, so a caller may
// still try something else on it (the probe tries a TLS handshake when no
// banner came). A connect is the exception: Asio's range connect moves on
// to the next address after a cancel and stops only on a closed socket.
IoOutcome SmtpConnection::run_until(const error_code& result,
                                    Clock::time_point deadline,
                                    OnExpiry on_expiry) {
  io_.restart();
  io_.run_until(deadline);
  if (io_.stopped()) return {result, false};

  error_code ignored;
  if (on_expiry == OnExpiry::kClose)
    socket().close(ignored);
  else
    socket().cancel(ignored);
  io_.restart();
  io_.run();
  // The operation may have finished just as the deadline passed.
  return {result, result == asio::error::operation_aborted};
}

IoOutcome SmtpConnection::connect(const tcp::resolver::results_type& endpoints,
                                  Clock::time_point deadline,
                                  tcp::endpoint& connected) {
  error_code result = asio::error::would_block;
  asio::async_connect(plain_, endpoints,
                      [&](const error_code& ec, const tcp::endpoint& ep) {
                        result = ec;
                        connected = ep;
                      });
  return run_until(result, deadline, OnExpiry::kClose);
}

// Bytes the relay sent before the handshake, after its "220" to
// STARTTLS, are plain text that an attacker on the path could have
// injected; they must not be read as if they came over TLS.
IoOutcome SmtpConnection::start_tls(asio::ssl::context& context,
                                    const TlsPeer& peer,
                                    Clock::time_point deadline) {
  input_.consume(input_.size());
  tls_.emplace(std::move(plain_), context);
  if (!peer.sni.empty())
    SSL_set_tlsext_host_name(tls_->native_handle(), peer.sni.c_str());
  tls_->set_verify_mode(peer.verify_mode);
  if (peer.verify) tls_->set_verify_callback(peer.verify);

  error_code result = asio::error::would_block;
  tls_->async_handshake(asio::ssl::stream_base::client,
                        [&](const error_code& ec) { result = ec; });
  IoOutcome outcome = run_until(result, deadline);
  tls_established_ = outcome.ok();
  return outcome;
}

IoOutcome SmtpConnection::read_line(std::string& line,
                                    Clock::time_point deadline) {
  error_code result = asio::error::would_block;
  size_t length = 0;
  auto done = [&](const error_code& ec, size_t n) {
    result = ec;
    length = n;
  };
  if (tls_)
    asio::async_read_until(*tls_, input_, '\n', done);
  else
    asio::async_read_until(plain_, input_, '\n', done);
  IoOutcome outcome = run_until(result, deadline);
  if (!outcome.ok()) return outcome;

  auto data = static_cast<const char*>(input_.data().data());
  line.assign(data, length - 1);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  input_.consume(length);
  return outcome;
}

IoOutcome SmtpConnection::read_reply(
    SmtpReply& reply, Clock::time_point deadline,
    const std::function<void(std::string_view)>& on_line) {
  SmtpReplyReader reader;
  for (;;) {
    std::string line;
    IoOutcome outcome = read_line(line, deadline);
    if (!outcome.ok()) return outcome;
    on_line(line);

    auto status = reader.add(line);
    if (status == SmtpReplyReader::Status::kMalformed)
      return {asio::error::invalid_argument, false};
    if (status == SmtpReplyReader::Status::kDone) {
      reply = reader.reply();
      return {};
    }
  }
}

IoOutcome SmtpConnection::send_line(std::string_view line,
                                    Clock::time_point deadline) {
  std::string wire = std::string(line) + "\r\n";
  error_code result = asio::error::would_block;
  auto done = [&](const error_code& ec, size_t) { result = ec; };
  if (tls_)
    asio::async_write(*tls_, asio::buffer(wire), done);
  else
    asio::async_write(plain_, asio::buffer(wire), done);
  return run_until(result, deadline);
}

}  // namespace havenoro::probe
