#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace havenoro::util {

/// The gid of a group of this system, e.g. "Debian-exim", or nothing when
/// there is none. Uses getgrnam_r: safe beside other threads.
std::optional<gid_t> find_group(const std::string& name);

/// The gid of a group of this system. Throws std::system_error naming the
/// group when there is none ("no group 'NAME'").
gid_t group_id(const std::string& name);

}  // namespace havenoro::util
