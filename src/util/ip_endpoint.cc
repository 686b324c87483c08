#include "havenoro_relay/util/ip_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>

namespace havenoro::util {

std::optional<IpEndpoint> parse_ip_endpoint(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  std::string host = text.substr(0, colon);
  std::string_view digits(text.data() + colon + 1, text.size() - colon - 1);
  if (digits.empty() || digits.size() > 5 ||
      !std::all_of(digits.begin(), digits.end(),
                   [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return std::nullopt;
  }
  int port = 0;
  std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (port < 1 || port > 65535) return std::nullopt;

  IpEndpoint e;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.address);
    host = host.substr(1, host.size() - 2);
    if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) != 1)
      return std::nullopt;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    e.length = sizeof *v6;
    return e;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&e.address);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) != 1)
    return std::nullopt;
  v4->sin_family = AF_INET;
  v4->sin_port = htons(static_cast<uint16_t>(port));
  e.length = sizeof *v4;
  return e;
}

}  // namespace havenoro::util
