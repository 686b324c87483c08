#include "havenoro_relay/render/credential_file.h"

#include <fmt/format.h>

namespace havenoro::render {

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<unsigned char>(bytes[k]); };
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t n = at(i) << 16 | at(i + 1) << 8 | at(i + 2);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
  }
  if (size_t rest = bytes.size() - i; rest > 0) {
    uint32_t n = at(i) << 16 | (rest == 2 ? at(i + 1) << 8 : 0);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string route_of(const panel::RelaySettings& relay) {
  bool ipv6 = relay.host.find(':') != std::string::npos;
  return ipv6 ? fmt::format("[{}]:{}", relay.host, relay.port)
              : fmt::format("{}:{}", relay.host, relay.port);
}

std::string render_credential_file(std::string_view owner,
                                   const panel::RelaySettings& relay) {
  // Every value is either produced here or base64: nothing the panel
  // stored can add a key, continue a line or lose its blanks in lsearch.
  return fmt::format(
      "# havenoro-relayd: relay of {}; managed file, edits are overwritten\n"
      "route: {}\n"
      "transport: {}\n"
      "tls: {}\n"
      "verify: {}\n"
      "auth: {}\n"
      "username: {}\n"
      "password: {}\n",
      owner, route_of(relay),
      relay.implicit_tls() ? "havenoro_relay_smtps" : "havenoro_relay_smtp",
      relay.requires_tls() ? "required" : "none",
      relay.verify_certificate ? "yes" : "no",
      relay.authenticates() ? "yes" : "no", base64_encode(relay.username),
      base64_encode(relay.password));
}

}  // namespace havenoro::render
