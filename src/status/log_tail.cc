#include "havenoro_relay/status/log_tail.h"

#include <sys/stat.h>

#include <fstream>
#include <iterator>

namespace havenoro::status {

LogTail::LogTail(std::filesystem::path path, std::uintmax_t offset)
    : path_(std::move(path)), offset_(offset) {
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0) inode_ = st.st_ino;
}

std::uintmax_t LogTail::end_of(const std::filesystem::path& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

std::vector<std::string> LogTail::read_lines() {
  std::vector<std::string> lines;
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) return lines;
  if (st.st_ino != inode_ ||
      static_cast<std::uintmax_t>(st.st_size) < offset_) {
    inode_ = st.st_ino;  // rotated or truncated: start over
    offset_ = 0;
    partial_.clear();
  }
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset_));
  std::string chunk((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  offset_ += chunk.size();
  partial_ += chunk;
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos;
       start = nl + 1) {
    lines.push_back(partial_.substr(start, nl - start));
  }
  partial_.erase(0, start);
  return lines;
}

}  // namespace havenoro::status
