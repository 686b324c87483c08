#include "havenoro_relay/daemon/panel_watcher.h"

#include <fmt/format.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace havenoro::daemon {
namespace {

namespace fs = std::filesystem;

// IN_CREATE matters for directories only: a new file is empty until its
// writer closes it (IN_CLOSE_WRITE) or renames it into place
// (IN_MOVED_TO), and reading it earlier would report a half-written file.
constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                           IN_DELETE | IN_CREATE | IN_DELETE_SELF |
                           IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW |
                           IN_EXCL_UNLINK;

constexpr uint32_t kFileChange =
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE;

bool is_under(const fs::path& path, const fs::path& dir) {
  const auto& p = path.native();
  const auto& d = dir.native();
  return p == d ||
         (p.starts_with(d) && p.size() > d.size() && p[d.size()] == '/');
}

}  // namespace

PanelWatcher::PanelWatcher(fs::path panel_root)
    : root_(std::move(panel_root)),
      fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
  if (!fd_.valid()) throw util::errno_error("inotify_init1", root_.string());
}

// The tree's shape (panel-contract §1): root, conf, data, data/users,
// data/users/<user>, data/users/<user>/mail. Nothing deeper is watched.
bool PanelWatcher::is_watched_dir(const fs::path& dir) const {
  if (!is_under(dir, root_)) return false;
  std::vector<std::string> parts;
  for (const auto& p : dir.lexically_relative(root_)) {
    if (p != ".") parts.push_back(p.string());
  }
  switch (parts.size()) {
    case 0:
      return true;
    case 1:
      return parts[0] == "conf" || parts[0] == "data";
    case 2:
      return parts[0] == "data" && parts[1] == "users";
    case 3:
      return parts[0] == "data" && parts[1] == "users" &&
             parts[2].front() != '.';
    case 4:
      return parts[0] == "data" && parts[1] == "users" &&
             parts[2].front() != '.' && parts[3] == "mail";
    default:
      return false;
  }
}

// A directory that appears may already hold files written before its
// watch existed; `found` (when given) collects them so none is missed.
// Returns the directory's watch descriptor, -1 when it is not watched.
int PanelWatcher::add_tree(const fs::path& dir, PanelChanges* found,
                           std::vector<std::string>& warnings) {
  if (!is_watched_dir(dir)) return -1;
  int wd = ::inotify_add_watch(fd_.get(), dir.c_str(), kMask);
  if (wd < 0) {
    int err = errno;
    // A root that cannot be watched is no warning of each rescan: the
    // daemon says once that it is lost, and looks again at intervals.
    // Below it, a directory gone again or not a directory is nothing lost.
    if (dir == root_) {
      root_error_ = std::strerror(err);
    } else if (err != ENOENT && err != ENOTDIR) {
      warnings.push_back(fmt::format("cannot watch '{}': {}", dir.string(),
                                     std::strerror(err)));
    }
    return -1;
  }
  dirs_[wd] = dir;

  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory(ec) && !entry.is_symlink(ec)) {
      add_tree(entry.path(), found, warnings);
    } else if (found) {
      found->paths.insert(entry.path());
    }
  }
  return wd;
}

void PanelWatcher::drop_tree(const fs::path& dir) {
  for (auto it = dirs_.begin(); it != dirs_.end();) {
    if (is_under(it->second, dir)) {
      ::inotify_rm_watch(fd_.get(), it->first);
      it = dirs_.erase(it);
    } else {
      ++it;
    }
  }
}

void PanelWatcher::lose_root() {
  drop_tree(root_);
  root_wd_ = -1;
}

// inotify follows inodes, not paths: a root replaced while no event said
// so (its parent renamed, a file system mounted over it) would leave
// every watch on the old tree. One lstat() per rescan tells.
std::vector<std::string> PanelWatcher::rescan() {
  std::vector<std::string> warnings;
  struct stat st {};
  if (::lstat(root_.c_str(), &st) != 0) {
    root_error_ = std::strerror(errno);
    lose_root();
    return warnings;
  }
  std::pair<dev_t, ino_t> id{st.st_dev, st.st_ino};
  if (root_wd_ >= 0 && id != root_id_) lose_root();
  root_error_.clear();
  root_wd_ = add_tree(root_, nullptr, warnings);
  if (root_wd_ < 0) lose_root();
  root_id_ = id;
  return warnings;
}

void PanelWatcher::handle(int wd, uint32_t mask, const std::string& name,
                          PanelChanges& out) {
  if (mask & IN_Q_OVERFLOW) {
    out.overflow = true;
    return;
  }
  auto it = dirs_.find(wd);
  if (it == dirs_.end()) return;
  fs::path dir = it->second;
  if (mask & IN_IGNORED) {
    dirs_.erase(it);
    if (wd == root_wd_) {
      lose_root();  // unmounted: the rest of the tree goes with it
      out.root_gone = true;
    }
    return;
  }
  if (mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
    // Below the root, the parent's event says the same. The root itself
    // going means the whole tree must be read again once it is back.
    if (wd == root_wd_) {
      lose_root();
      out.root_gone = true;
    }
    return;
  }
  if (name.empty()) return;

  fs::path path = dir / name;
  if (mask & IN_ISDIR) {
    if (!is_watched_dir(path)) return;
    if (mask & (IN_DELETE | IN_MOVED_FROM)) drop_tree(path);
    if (mask & (IN_CREATE | IN_MOVED_TO)) add_tree(path, &out, out.warnings);
    out.paths.insert(path);
  } else if (mask & kFileChange) {
    out.paths.insert(path);
  }
}

PanelChanges PanelWatcher::read_changes() {
  PanelChanges out;
  alignas(inotify_event) char buf[64 * 1024];
  while (true) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) throw util::errno_error("read inotify events", root_.string());
    for (char* p = buf; p < buf + n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(p);
      std::string name = ev->len ? std::string(ev->name) : std::string();
      handle(ev->wd, ev->mask, name, out);
      p += sizeof(inotify_event) + ev->len;
    }
  }
  return out;
}

}  // namespace havenoro::daemon
