#include "havenoro_relay/util/file_stamp.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

namespace havenoro::util {
namespace {

int64_t nanoseconds(const struct timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

}  // namespace

FileStamp stamp_of(const struct stat& st) {
  return {st.st_ino, st.st_size, nanoseconds(st.st_mtim),
          nanoseconds(st.st_ctim)};
}

std::optional<FileStamp> stamp_at(int dir_fd, const char* name) {
  struct stat st;
  if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return {};
  return stamp_of(st);
}

std::vector<StampedName> list_stamps(int dir_fd, const std::string& rel) {
  std::vector<StampedName> entries;
  int fd = ::openat(dir_fd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = fd < 0 ? nullptr : ::fdopendir(fd);
  if (!d) {
    if (fd >= 0) ::close(fd);
    return entries;
  }
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (auto stamp = stamp_at(::dirfd(d), e->d_name)) {
      entries.emplace_back(e->d_name, *stamp);
    }
  }
  ::closedir(d);
  return entries;
}

}  // namespace havenoro::util
