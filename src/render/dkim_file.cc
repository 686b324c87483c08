#include "havenoro_relay/render/dkim_file.h"

#include <fmt/format.h>

namespace havenoro::render {

std::string render_dkim_conf(std::string_view domain,
                             std::string_view selector) {
  // The selector was checked to be a DNS label: safe as a raw value.
  return fmt::format(
      "# havenoro-relayd: DKIM selector of {}; managed file, edits are "
      "overwritten\n"
      "selector: {}\n",
      domain, selector);
}

}  // namespace havenoro::render
