#pragma once

#include <string>
#include <string_view>

namespace havenoro::probe {

/// The AUTH PLAIN response (RFC 4616) without an authorization identity:
/// base64 of NUL, username, NUL, password.
std::string plain_response(std::string_view username,
                           std::string_view password);

}  // namespace havenoro::probe
