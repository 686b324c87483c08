#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "havenoro_relay/probe/smtp_reply.h"

namespace havenoro::probe {

using Clock = std::chrono::steady_clock;

/// The outcome of one network operation with a deadline.
struct IoOutcome {
  boost::system::error_code error;
  bool timed_out = false;
  bool ok() const { return !error && !timed_out; }
};

/// How to check the relay's certificate during a TLS handshake.
struct TlsPeer {
  std::string sni;  ///< empty: send none (the relay is an IP address)
  boost::asio::ssl::verify_mode verify_mode = boost::asio::ssl::verify_none;
  std::function<bool(bool, boost::asio::ssl::verify_context&)> verify;
};

/// One SMTP client connection, plain at first and TLS once start_tls()
/// succeeds. Every operation ends by its deadline: a relay that accepts and
/// stays silent costs a timeout, never a hang.
class SmtpConnection {
 public:
  SmtpConnection() = default;

  /// Connects to the first endpoint that accepts; `connected` names it.
  IoOutcome connect(
      const boost::asio::ip::tcp::resolver::results_type& endpoints,
      Clock::time_point deadline, boost::asio::ip::tcp::endpoint& connected);

  /// Runs the TLS handshake on the open connection. Whatever plain text
  /// the relay sent ahead of it is dropped.
  IoOutcome start_tls(boost::asio::ssl::context& context, const TlsPeer& peer,
                      Clock::time_point deadline);

  /// Reads one whole reply, multi-line ones included, and hands each raw
  /// line to `on_line` as it arrives. A reply that is not SMTP ends with
  /// boost::asio::error::invalid_argument.
  IoOutcome read_reply(SmtpReply& reply, Clock::time_point deadline,
                       const std::function<void(std::string_view)>& on_line);

  /// Sends one command line; CR LF is added.
  IoOutcome send_line(std::string_view line, Clock::time_point deadline);

  /// True once a TLS handshake has succeeded.
  bool tls_active() const { return tls_established_; }
  /// The OpenSSL session, once TLS is active; for reading its details.
  SSL* tls_handle() { return tls_ ? tls_->native_handle() : nullptr; }

 private:
  boost::asio::ip::tcp::socket& socket();
  enum class OnExpiry { kCancel, kClose };
  IoOutcome run_until(const boost::system::error_code& result,
                      Clock::time_point deadline,
                      OnExpiry on_expiry = OnExpiry::kCancel);
  IoOutcome read_line(std::string& line, Clock::time_point deadline);

  static constexpr size_t kMaxBuffered = 64 * 1024;

  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket plain_{io_};
  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_;
  boost::asio::streambuf input_{kMaxBuffered};
  bool tls_established_ = false;
};

}  // namespace havenoro::probe
