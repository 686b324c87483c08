#include "havenoro_relay/util/group.h"

#include <grp.h>

#include <cerrno>
#include <system_error>
#include <vector>

namespace havenoro::util {

std::optional<gid_t> find_group(const std::string& name) {
  struct group entry {};
  struct group* found = nullptr;
  // A group with many members needs a larger buffer than the usual.
  std::vector<char> buffer(4096);
  int rc = 0;
  while ((rc = ::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(),
                            &found)) == ERANGE) {
    buffer.resize(buffer.size() * 2);
  }
  if (rc != 0 || found == nullptr) return std::nullopt;
  return found->gr_gid;
}

gid_t group_id(const std::string& name) {
  if (auto gid = find_group(name)) return *gid;
  throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                          "no group '" + name + "'");
}

}  // namespace havenoro::util
