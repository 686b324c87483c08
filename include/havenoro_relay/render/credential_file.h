#pragma once

#include <string>
#include <string_view>

#include "havenoro_relay/panel/relay_settings.h"

namespace havenoro::render {

/// Renders a relay's `smtp_relay.conf`, the lsearch file that the havenoro
/// routers, transports and authenticators read (docs/configuration.md).
/// `owner` names whose relay it is in the file's header comment.
std::string render_credential_file(std::string_view owner,
                                   const panel::RelaySettings& relay);

/// The value of the file's `route` key: `host:port`, or `[addr]:port` for
/// an IPv6 address, as Exim's host lists with `<;` read it.
std::string route_of(const panel::RelaySettings& relay);

/// Standard base64 with padding; the credential file stores usernames and
/// passwords this way so that Exim's `${base64d:…}` returns every byte.
std::string base64_encode(std::string_view bytes);

}  // namespace havenoro::render
