#pragma once

#include <sys/socket.h>

#include <optional>
#include <string>

namespace havenoro::util {

/// An IP address and a port, ready for connect().
struct IpEndpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
};

/// Reads an address as the settings write it: "127.0.0.1:25" or
/// "[::1]:25", the port from 1 to 65535. Nothing for any other text: a
/// host name, an IPv6 address without brackets, a missing port.
std::optional<IpEndpoint> parse_ip_endpoint(const std::string& text);

}  // namespace havenoro::util
