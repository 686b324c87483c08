#pragma once

#include <filesystem>
#include <vector>

#include "panel_generator.h"

namespace havenoro::bench {

/// Writes the obvious alternative to havenoro's generic routers: Exim's
/// main configuration `base` (already written for the bench, without any
/// havenoro generation) with one manualroute router and one smtp transport
/// per relay domain, selected by the sender's domain, and one lsearch file
/// of credentials for a shared authenticator. Written to `file`; the
/// credential file beside it.
void write_router_per_domain_config(
    const std::filesystem::path& base, const std::filesystem::path& file,
    const std::vector<const GeneratedDomain*>& relays);

}  // namespace havenoro::bench
