#include "havenoro_relay/util/fd.h"

#include <unistd.h>

#include <cerrno>

namespace havenoro::util {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

int UniqueFd::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

std::system_error errno_error(const std::string& what,
                              const std::string& path) {
  int saved = errno;
  return std::system_error(saved, std::generic_category(),
                           what + " '" + path + "'");
}

}  // namespace havenoro::util
