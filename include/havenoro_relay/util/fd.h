#pragma once

#include <string>
#include <system_error>

namespace havenoro::util {

/// Owns one file descriptor and closes it when destroyed.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();

 private:
  int fd_ = -1;
};

/// Builds a std::system_error from the current errno, naming what failed
/// and on which path: "open '/etc/x': Permission denied".
std::system_error errno_error(const std::string& what, const std::string& path);

}  // namespace havenoro::util
