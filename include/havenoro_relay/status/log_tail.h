#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace havenoro::status {

/// Reads what is appended to a log file, in whole lines, across calls. A
/// rotated file (another inode) or a truncated one is read from its start;
/// a line not yet ended by a newline waits for the next call.
class LogTail {
 public:
  /// Follows `path` from `offset` (0: the start; end_of(path): now).
  explicit LogTail(std::filesystem::path path, std::uintmax_t offset = 0);

  /// The complete lines appended since the last call; none when the file
  /// does not exist.
  std::vector<std::string> read_lines();

  /// The size of the file now, or 0 when it does not exist.
  static std::uintmax_t end_of(const std::filesystem::path& path);

 private:
  std::filesystem::path path_;
  std::uintmax_t inode_ = 0;
  std::uintmax_t offset_ = 0;
  std::string partial_;
};

}  // namespace havenoro::status
