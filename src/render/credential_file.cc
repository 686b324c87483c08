#include "havenoro_relay/render/credential_file.h"

#include <fmt/format.h>
#include <openssl/evp.h>

namespace havenoro::render {

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
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
