#pragma once

#include <string>
#include <string_view>

namespace havenoro::probe {

/// Standard base64 (RFC 4648, with padding), as SMTP AUTH wants it.
std::string base64(std::string_view data);

/// The AUTH PLAIN response (RFC 4616) without an authorization identity:
/// base64 of NUL, username, NUL, password.
std::string plain_response(std::string_view username,
                           std::string_view password);

}  // namespace havenoro::probe
