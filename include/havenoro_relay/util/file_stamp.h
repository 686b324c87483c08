#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace havenoro::util {

/// What tells one version of a file from another without reading it: any
/// write, rename over, chmod or chown changes at least one of these (the
/// change time cannot be set back by a program, and a file of another
/// file system has other times). Kept small: one is held per panel file
/// and per live file, 20,000 at 10,000 domains.
struct FileStamp {
  ino_t inode = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;

  bool operator==(const FileStamp&) const = default;
};

/// The stamp of what `st` describes.
FileStamp stamp_of(const struct stat& st);

/// The stamp of `name` in the directory `dir_fd`, symlinks not followed;
/// nothing when it does not exist.
std::optional<FileStamp> stamp_at(int dir_fd, const char* name);

/// One entry of a directory and its stamp.
using StampedName = std::pair<std::string, FileStamp>;

/// Every entry of the directory `rel` below `dir_fd` (or AT_FDCWD) but the
/// dot-files, with its stamp (symlinks not followed), in the directory's
/// order; one fstatat each. Empty when the directory cannot be opened.
std::vector<StampedName> list_stamps(int dir_fd, const std::string& rel);

}  // namespace havenoro::util
