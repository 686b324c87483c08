#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <string>

namespace havenoro::probe {

/// The addresses a host name resolved to, or why it did not.
struct Resolution {
  boost::asio::ip::tcp::resolver::results_type endpoints;
  boost::system::error_code error;
  bool timed_out = false;
};

/// Resolves `host` (a DNS name or an address) for TCP port `port`, giving
/// up at `deadline`. Throws std::system_error if no thread can be started.
Resolution resolve_host(const std::string& host, uint16_t port,
                        std::chrono::steady_clock::time_point deadline);

}  // namespace havenoro::probe
