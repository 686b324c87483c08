#include "havenoro_relay/apply/output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;
using util::errno_error;
using util::UniqueFd;

constexpr mode_t kDirMode = 0750;

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw errno_error("write", path);
    done += n;
  }
}

std::string read_all(int fd, const std::string& path) {
  std::string data;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw errno_error("read", path);
    if (n == 0) return data;
    data.append(buf, n);
  }
}

}  // namespace

gid_t group_id(const std::string& name) {
  struct group* g = ::getgrnam(name.c_str());
  if (!g) throw std::runtime_error("unknown group '" + name + "'");
  return g->gr_gid;
}

OutputDir::OutputDir(fs::path root, gid_t group)
    : root_(std::move(root)), group_(group) {
  if (::mkdir(root_.c_str(), kDirMode) == 0) {
    if (::chown(root_.c_str(), 0, group_) != 0 ||
        ::chmod(root_.c_str(), kDirMode) != 0) {
      throw errno_error("chown", root_.string());
    }
  } else if (errno != EEXIST) {
    throw errno_error("mkdir", root_.string());
  }
  root_fd_ = UniqueFd(
      ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root_fd_.valid()) throw errno_error("open", root_.string());
}

UniqueFd OutputDir::open_dir(const fs::path& rel, bool create) const {
  UniqueFd dir(::dup(root_fd_.get()));
  fs::path so_far = root_;
  for (const auto& part : rel) {
    so_far /= part;
    if (create && ::mkdirat(dir.get(), part.c_str(), kDirMode) == 0) {
      // The umask may have taken bits off: the mode is set, not asked for.
      if (::fchownat(dir.get(), part.c_str(), 0, group_, AT_SYMLINK_NOFOLLOW) !=
              0 ||
          ::fchmodat(dir.get(), part.c_str(), kDirMode, 0) != 0) {
        throw errno_error("chown", so_far.string());
      }
    }
    UniqueFd next(::openat(dir.get(), part.c_str(),
                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      if (errno == ENOENT && !create) return {};
      throw errno_error("open directory (symlinks are refused)",
                        so_far.string());
    }
    dir = std::move(next);
  }
  return dir;
}

std::optional<std::string> OutputDir::read(const fs::path& rel) const {
  UniqueFd dir = open_dir(rel.parent_path(), false);
  if (!dir.valid()) return {};
  UniqueFd fd(::openat(dir.get(), rel.filename().c_str(),
                       O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return {};
    throw errno_error("open (symlinks are refused)", (root_ / rel).string());
  }
  return read_all(fd.get(), (root_ / rel).string());
}

bool OutputDir::exists(const fs::path& rel) const {
  UniqueFd dir = open_dir(rel.parent_path(), false);
  struct stat st;
  return dir.valid() && ::fstatat(dir.get(), rel.filename().c_str(), &st,
                                  AT_SYMLINK_NOFOLLOW) == 0;
}

bool OutputDir::matches(const fs::path& rel, const std::string& content,
                        mode_t mode) const {
  UniqueFd dir = open_dir(rel.parent_path(), false);
  if (!dir.valid()) return false;
  UniqueFd fd(::openat(dir.get(), rel.filename().c_str(),
                       O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return false;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if ((st.st_mode & 07777) != mode || st.st_uid != ::geteuid() ||
      st.st_gid != group_ || st.st_size != static_cast<off_t>(content.size())) {
    return false;
  }
  return read_all(fd.get(), (root_ / rel).string()) == content;
}

std::string OutputDir::temp_name(const std::string& base) {
  return fmt::format(".{}.{}.{}.tmp", base, ::getpid(), ++temp_counter_);
}

StagedFile OutputDir::stage(const fs::path& rel, const std::string& content,
                            mode_t mode) {
  UniqueFd dir = open_dir(rel.parent_path(), true);
  StagedFile staged{rel, temp_name(rel.filename().string())};
  std::string shown = (root_ / rel.parent_path() / staged.temp_name).string();
  UniqueFd fd(::openat(dir.get(), staged.temp_name.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600));
  if (!fd.valid()) throw errno_error("create", shown);
  // Owner and mode are right before the file has a name Exim reads.
  if (::fchown(fd.get(), 0, group_) != 0) throw errno_error("chown", shown);
  if (::fchmod(fd.get(), mode) != 0) throw errno_error("chmod", shown);
  write_all(fd.get(), content, shown);
  return staged;
}

void OutputDir::commit(const std::vector<StagedFile>& files, bool durable) {
  if (files.empty()) return;
  if (durable) sync();
  for (const auto& f : files) {
    UniqueFd dir = open_dir(f.path.parent_path(), false);
    if (!dir.valid() || ::renameat(dir.get(), f.temp_name.c_str(), dir.get(),
                                   f.path.filename().c_str()) != 0) {
      throw errno_error("rename into place", (root_ / f.path).string());
    }
  }
  if (durable) sync();
}

void OutputDir::discard(const std::vector<StagedFile>& files) noexcept {
  for (const auto& f : files) {
    try {
      UniqueFd dir = open_dir(f.path.parent_path(), false);
      if (dir.valid()) ::unlinkat(dir.get(), f.temp_name.c_str(), 0);
    } catch (...) {
    }
  }
}

std::vector<std::string> OutputDir::list(const fs::path& rel_dir) const {
  std::vector<std::string> names;
  UniqueFd dir = open_dir(rel_dir, false);
  if (!dir.valid()) return names;
  DIR* d = ::fdopendir(dir.release());
  if (!d) throw errno_error("list", (root_ / rel_dir).string());
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

void OutputDir::make_dir(const fs::path& rel) {
  UniqueFd parent = open_dir(rel.parent_path(), true);
  std::string shown = (root_ / rel).string();
  if (::mkdirat(parent.get(), rel.filename().c_str(), kDirMode) != 0) {
    throw errno_error("mkdir", shown);
  }
  if (::fchownat(parent.get(), rel.filename().c_str(), 0, group_,
                 AT_SYMLINK_NOFOLLOW) != 0 ||
      ::fchmodat(parent.get(), rel.filename().c_str(), kDirMode, 0) != 0) {
    throw errno_error("chown", shown);
  }
}

void OutputDir::rename(const fs::path& from, const fs::path& to) {
  UniqueFd a = open_dir(from.parent_path(), false);
  UniqueFd b = open_dir(to.parent_path(), true);
  if (!a.valid() || ::renameat(a.get(), from.filename().c_str(), b.get(),
                               to.filename().c_str()) != 0) {
    throw errno_error("rename", (root_ / from).string());
  }
}

void OutputDir::remove_all(const fs::path& rel) {
  UniqueFd parent = open_dir(rel.parent_path(), false);
  if (!parent.valid()) return;
  std::string base = rel.filename().string();
  const char* name = base.c_str();
  if (::unlinkat(parent.get(), name, 0) == 0 || errno == ENOENT) return;
  if (errno != EISDIR) throw errno_error("remove", (root_ / rel).string());
  UniqueFd probe(::openat(parent.get(), name,
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!probe.valid()) throw errno_error("open", (root_ / rel).string());
  // list() leaves out dot-files; read every entry here instead.
  DIR* d = ::fdopendir(::dup(probe.get()));
  std::vector<std::string> names;
  while (struct dirent* e = d ? ::readdir(d) : nullptr) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  if (d) ::closedir(d);
  for (const auto& n : names) remove_all(rel / n);
  if (::unlinkat(parent.get(), name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
    throw errno_error("remove directory", (root_ / rel).string());
  }
}

void OutputDir::remove_leftovers(const fs::path& rel_dir) {
  UniqueFd dir = open_dir(rel_dir, false);
  if (!dir.valid()) return;
  DIR* d = ::fdopendir(dir.release());
  if (!d) throw errno_error("list", (root_ / rel_dir).string());
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    bool leftover =
        n.starts_with(".") && (n.ends_with(".tmp") || n.starts_with(".new-") ||
                               n.starts_with(".old-") || n == ".check");
    if (leftover) names.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : names) remove_all(rel_dir / n);
}

std::optional<std::string> OutputDir::read_link(const fs::path& rel) const {
  UniqueFd dir = open_dir(rel.parent_path(), false);
  if (!dir.valid()) return {};
  char buf[4096];
  ssize_t n = ::readlinkat(dir.get(), rel.filename().c_str(), buf, sizeof buf);
  if (n < 0) {
    if (errno == ENOENT || errno == EINVAL) return {};
    throw errno_error("readlink", (root_ / rel).string());
  }
  return std::string(buf, n);
}

void OutputDir::replace_link(const fs::path& rel, const std::string& target) {
  UniqueFd dir = open_dir(rel.parent_path(), true);
  std::string temp = temp_name(rel.filename().string());
  if (::symlinkat(target.c_str(), dir.get(), temp.c_str()) != 0) {
    throw errno_error("symlink", (root_ / rel).string());
  }
  ::fchownat(dir.get(), temp.c_str(), 0, group_, AT_SYMLINK_NOFOLLOW);
  if (::renameat(dir.get(), temp.c_str(), dir.get(), rel.filename().c_str()) !=
      0) {
    int saved = errno;
    ::unlinkat(dir.get(), temp.c_str(), 0);
    errno = saved;
    throw errno_error("rename link", (root_ / rel).string());
  }
  ::fsync(dir.get());
}

void OutputDir::sync() {
  if (::syncfs(root_fd_.get()) != 0)
    throw errno_error("syncfs", root_.string());
}

}  // namespace havenoro::apply
