#pragma once

#include <string>
#include <string_view>

namespace havenoro::render {

/// Renders `dkim/<domain>/dkim.conf`, the lsearch file with the selector
/// that the havenoro transports sign a domain's mail with. The key itself
/// sits beside it in `private.pem`, as the panel stored it.
std::string render_dkim_conf(std::string_view domain,
                             std::string_view selector);

}  // namespace havenoro::render
