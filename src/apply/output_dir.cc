#include "havenoro_relay/apply/output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <future>
#include <stdexcept>
#include <thread>

#include "havenoro_relay/util/log_event.h"

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;
using util::errno_error;
using util::UniqueFd;

constexpr mode_t kDirMode = 0750;
constexpr mode_t kLockMode = 0640;
constexpr size_t kMaxCachedDirs = 64;

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

// Creates `name` in `dir` (never over anything there), owner and mode set
// before any byte is written, and writes `content`.
void create_file(int dir, const char* name, const std::string& shown,
                 gid_t group, const std::string& content, mode_t mode) {
  UniqueFd fd(::openat(
      dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) throw errno_error("create", shown);
  if (::fchown(fd.get(), 0, group) != 0) throw errno_error("chown", shown);
  if (::fchmod(fd.get(), mode) != 0) throw errno_error("chmod", shown);
  write_all(fd.get(), content, shown);
}

}  // namespace

OutputDir::OutputDir(fs::path root, gid_t group)
    : root_(std::move(root)), group_(group) {
  bool created = ::mkdir(root_.c_str(), kDirMode) == 0;
  if (!created && errno != EEXIST) throw errno_error("mkdir", root_.string());
  root_fd_ = std::make_shared<UniqueFd>(
      ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root_fd_->valid()) throw errno_error("open", root_.string());
  own_root(created);
}

// Exim's delivery user reaches every credential file through the root, so
// a root made by hand or by another tool (root:root, or 0700) makes every
// relayed message defer. Owner and mode are set through the open handle:
// what is changed is the directory that was opened without following a
// symlink, whatever the path names by now.
void OutputDir::own_root(bool created) {
  int fd = root_fd_->get();
  struct stat st;
  if (::fstat(fd, &st) != 0) throw errno_error("stat", root_.string());
  mode_t mode = st.st_mode & 07777;
  if (st.st_uid == 0 && st.st_gid == group_ && mode == kDirMode) return;
  if (::fchown(fd, 0, group_) != 0) throw errno_error("chown", root_.string());
  // The mode last: the chown may clear set-id bits, and it makes root the
  // owner, who may then set the mode without CAP_FOWNER.
  if (::fchmod(fd, kDirMode) != 0) throw errno_error("chmod", root_.string());
  if (created) return;  // the umask took bits off a directory made just now
  // Set right from now on, so this is logged once, not at every apply.
  spdlog::warn(util::LogEvent("output_dir.repaired")
                   .add("path", root_.string())
                   .add("uid", st.st_uid)
                   .add("gid", st.st_gid)
                   .add("mode", fmt::format("{:04o}", mode))
                   .add("new_gid", group_)
                   .add("new_mode", fmt::format("{:04o}", kDirMode))
                   .str());
}

OutputDir::Dir OutputDir::dir_fd(const fs::path& rel, bool create) const {
  if (rel.empty()) return root_fd_;
  std::string key = rel.string();
  if (auto it = dirs_.find(key); it != dirs_.end()) return it->second;
  Dir parent = dir_fd(rel.parent_path(), create);
  if (!parent) return nullptr;
  std::string name = rel.filename().string();
  const char* part = name.c_str();
  if (create && ::mkdirat(parent.get(), part, kDirMode) == 0) {
    // The umask may have taken bits off: the mode is set, not asked for.
    if (::fchownat(parent.get(), part, 0, group_, AT_SYMLINK_NOFOLLOW) != 0 ||
        ::fchmodat(parent.get(), part, kDirMode, 0) != 0) {
      throw errno_error("chown", (root_ / rel).string());
    }
  }
  auto fd = std::make_shared<UniqueFd>(::openat(
      parent.get(), part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd->valid()) {
    if (errno == ENOENT && !create) return nullptr;
    throw errno_error("open directory (symlinks are refused)",
                      (root_ / rel).string());
  }
  // The top directories stay open for the apply; the per-domain ones
  // below them, thousands in a full apply, are let go in bulk.
  if (dirs_.size() >= kMaxCachedDirs) {
    std::erase_if(dirs_, [](const auto& e) {
      return e.first.find('/') != std::string::npos;
    });
  }
  dirs_.emplace(key, fd);
  return fd;
}

void OutputDir::forget(const fs::path& rel) const {
  std::string key = rel.string();
  std::erase_if(dirs_, [&](const auto& e) {
    return e.first == key ||
           (e.first.size() > key.size() && e.first.starts_with(key) &&
            e.first[key.size()] == '/');
  });
}

std::optional<std::string> OutputDir::read(const fs::path& rel) const {
  Dir dir = dir_fd(rel.parent_path(), false);
  if (!dir) return {};
  UniqueFd fd(::openat(dir.get(), rel.filename().c_str(),
                       O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return {};
    throw errno_error("open (symlinks are refused)", (root_ / rel).string());
  }
  return read_all(fd.get(), (root_ / rel).string());
}

std::optional<util::FileStamp> OutputDir::stamp(const fs::path& rel) const {
  auto it = rel.begin();
  if (std::distance(it, rel.end()) == 3) {
    // domains/<d>/smtp_relay.conf: one fstatat from the open top directory
    // instead of opening <d> (a resync asks about thousands of them). A
    // symlink at <d> is followed here: what it leads to matches a stamp
    // recorded by LiveFiles only if it is the very file this daemon wrote
    // (same device, inode and change time); anything else is read through
    // matches(), which refuses symlinks.
    Dir top = dir_fd(*it, false);
    if (!top) return {};
    auto below = rel.lexically_relative(*it);
    return util::stamp_at(top.get(), below.c_str());
  }
  Dir dir = dir_fd(rel.parent_path(), false);
  if (!dir) return {};
  return util::stamp_at(dir.get(), rel.filename().c_str());
}

bool OutputDir::exists(const fs::path& rel) const {
  Dir dir = dir_fd(rel.parent_path(), false);
  struct stat st;
  return dir && ::fstatat(dir.get(), rel.filename().c_str(), &st,
                          AT_SYMLINK_NOFOLLOW) == 0;
}

bool OutputDir::matches(const fs::path& rel, const std::string& content,
                        mode_t mode) const {
  Dir dir = dir_fd(rel.parent_path(), false);
  if (!dir) return false;
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
  Dir dir = dir_fd(rel.parent_path(), true);
  StagedFile staged{rel, temp_name(rel.filename().string())};
  std::string shown = (root_ / rel.parent_path() / staged.temp_name).string();
  // Owner and mode are right before the file has a name Exim reads.
  create_file(dir.get(), staged.temp_name.c_str(), shown, group_, content,
              mode);
  return staged;
}

void OutputDir::write_new(const fs::path& rel, const std::string& content,
                          mode_t mode) {
  Dir dir = dir_fd(rel.parent_path(), true);
  create_file(dir.get(), rel.filename().c_str(), (root_ / rel).string(), group_,
              content, mode);
}

void OutputDir::make_durable(const std::vector<std::string>& rels) {
  sync_job(rels)();
}

std::future<void> OutputDir::make_durable_async(
    const std::vector<std::string>& rels) {
  return std::async(std::launch::async, sync_job(rels));
}

std::function<void()> OutputDir::sync_job(
    const std::vector<std::string>& rels) const {
  if (rels.size() > kMaxSyncEach || (rels.size() == 1 && rels[0].empty())) {
    auto fd = std::make_shared<UniqueFd>(::dup(root_fd_->get()));
    return [fd, shown = root_.string()] {
      if (::syncfs(fd->get()) != 0) throw errno_error("syncfs", shown);
    };
  }
  // Opened here: the directory handles belong to the caller's thread.
  auto files =
      std::make_shared<std::vector<std::pair<UniqueFd, std::string>>>();
  for (const auto& name : rels) {
    fs::path rel = name;
    std::string shown = (root_ / rel).string();
    Dir dir = dir_fd(rel.parent_path(), false);
    UniqueFd fd(!dir ? -1
                     : ::openat(dir.get(),
                                rel.empty() ? "." : rel.filename().c_str(),
                                O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) throw errno_error("fsync", shown);
    files->emplace_back(std::move(fd), std::move(shown));
  }
  return [files] {
    for (const auto& [fd, shown] : *files) {
      if (::fsync(fd.get()) != 0) throw errno_error("fsync", shown);
    }
  };
}

void OutputDir::commit(const std::vector<StagedFile>& files, bool durable) {
  if (files.empty()) return;
  if (durable) sync();
  for (const auto& f : files) {
    Dir dir = dir_fd(f.path.parent_path(), false);
    if (!dir || ::renameat(dir.get(), f.temp_name.c_str(), dir.get(),
                           f.path.filename().c_str()) != 0) {
      throw errno_error("rename into place", (root_ / f.path).string());
    }
  }
  if (durable) sync();
}

void OutputDir::discard(const std::vector<StagedFile>& files) noexcept {
  for (const auto& f : files) {
    try {
      Dir dir = dir_fd(f.path.parent_path(), false);
      if (dir) ::unlinkat(dir.get(), f.temp_name.c_str(), 0);
    } catch (...) {
    }
  }
}

std::vector<std::string> OutputDir::list(const fs::path& rel_dir) const {
  std::vector<std::string> names;
  Dir dir = dir_fd(rel_dir, false);
  if (!dir) return names;
  // A descriptor of its own: readdir moves its offset, closedir closes it.
  DIR* d =
      ::fdopendir(::openat(dir.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) throw errno_error("list", (root_ / rel_dir).string());
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

void OutputDir::make_dir(const fs::path& rel) {
  Dir parent = dir_fd(rel.parent_path(), true);
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
  Dir a = dir_fd(from.parent_path(), false);
  Dir b = dir_fd(to.parent_path(), true);
  if (!a || ::renameat(a.get(), from.filename().c_str(), b.get(),
                       to.filename().c_str()) != 0) {
    throw errno_error("rename", (root_ / from).string());
  }
  forget(from);
  forget(to);
}

void OutputDir::remove_all(const fs::path& rel) {
  Dir parent = dir_fd(rel.parent_path(), false);
  if (!parent) return;
  std::string base = rel.filename().string();
  const char* name = base.c_str();
  if (::unlinkat(parent.get(), name, 0) == 0 || errno == ENOENT) return;
  if (errno != EISDIR) throw errno_error("remove", (root_ / rel).string());
  forget(rel);
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
  forget(rel);
  parent = dir_fd(rel.parent_path(), false);
  if (parent && ::unlinkat(parent.get(), name, AT_REMOVEDIR) != 0 &&
      errno != ENOENT) {
    throw errno_error("remove directory", (root_ / rel).string());
  }
}

void OutputDir::remove_leftovers(const fs::path& rel_dir) {
  Dir dir = dir_fd(rel_dir, false);
  if (!dir) return;
  DIR* d =
      ::fdopendir(::openat(dir.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) throw errno_error("list", (root_ / rel_dir).string());
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    // ".check" is the scratch tree's name in earlier releases.
    bool leftover =
        n.starts_with(".") && (n.ends_with(".tmp") || n.starts_with(".new-") ||
                               n.starts_with(".old-") || n == ".check");
    if (leftover) names.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : names) remove_all(rel_dir / n);
}

std::optional<std::string> OutputDir::read_link(const fs::path& rel) const {
  Dir dir = dir_fd(rel.parent_path(), false);
  if (!dir) return {};
  char buf[4096];
  ssize_t n = ::readlinkat(dir.get(), rel.filename().c_str(), buf, sizeof buf);
  if (n < 0) {
    if (errno == ENOENT || errno == EINVAL) return {};
    throw errno_error("readlink", (root_ / rel).string());
  }
  return std::string(buf, n);
}

void OutputDir::replace_link(const fs::path& rel, const std::string& target) {
  Dir dir = dir_fd(rel.parent_path(), true);
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
  if (::syncfs(root_fd_->get()) != 0)
    throw errno_error("syncfs", root_.string());
}

UniqueFd OutputDir::open_lock_file(const char* name) const {
  std::string shown = (root_ / name).string();
  int dir = root_fd_->get();
  UniqueFd fd(::openat(
      dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid() && errno == EEXIST) {
    // O_NONBLOCK: whatever was planted there, opening it must not hang.
    fd = UniqueFd(
        ::openat(dir, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  }
  if (!fd.valid()) {
    throw errno_error("open lock file (symlinks are refused)", shown);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw errno_error("stat", shown);
  // A hard link would hand its other name's owner and mode to the group.
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
    throw std::system_error(EINVAL, std::generic_category(),
                            "lock file '" + shown + "' is not a plain file");
  }
  if (st.st_uid != 0 || st.st_gid != group_ ||
      (st.st_mode & 07777) != kLockMode) {
    if (::fchown(fd.get(), 0, group_) != 0) throw errno_error("chown", shown);
    if (::fchmod(fd.get(), kLockMode) != 0) throw errno_error("chmod", shown);
  }
  return fd;
}

OutputLock::OutputLock(const OutputDir& dir, std::chrono::milliseconds wait)
    : path_(dir.root() / kFile), fd_(dir.open_lock_file(kFile)) {
  auto start = std::chrono::steady_clock::now();
  held_ = try_lock() || (wait.count() > 0 && wait_until(start, wait));
  if (held_) {
    serial_ = read_record().serial;
  } else {
    holder_ = find_holder();
  }
}

OutputLock::~OutputLock() {
  // Explicitly: an Exim child forked meanwhile may still share the
  // descriptor until its exec closes it.
  if (held_) ::flock(fd_.get(), LOCK_UN);
}

bool OutputLock::try_lock() {
  for (;;) {
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) return true;
    if (errno == EWOULDBLOCK) return false;
    if (errno != EINTR) throw errno_error("lock", path_.string());
  }
}

// flock() has no timeout: polled, 1 ms apart at first, then 10 ms. A
// save's apply holds the lock for some 15 ms, so a waiter is let in soon
// after it. A wait that lasts is logged, once: the daemon's journal and
// --once's standard error say what it waits for.
bool OutputLock::wait_until(std::chrono::steady_clock::time_point start,
                            std::chrono::milliseconds wait) {
  using namespace std::chrono_literals;
  constexpr auto kQuiet = 1s;
  std::chrono::milliseconds pause = 1ms;
  bool logged = false;
  while (!try_lock()) {
    auto now = std::chrono::steady_clock::now();
    auto left = start + wait - now;
    if (left <= 0s) return false;
    if (!logged && now - start >= kQuiet) {
      LockHolder h = find_holder();
      spdlog::info(util::LogEvent("apply.waiting")
                       .add("path", path_.string())
                       .add("holder", h.name.empty() ? "unknown" : h.name)
                       .add("pid", h.pid)
                       .add("wait_ms", wait.count())
                       .str());
      logged = true;
    }
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, left));
    pause = std::min(pause * 2, std::chrono::milliseconds(10ms));
  }
  return true;
}

OutputLock::Record OutputLock::read_record() const {
  char buf[128] = {};
  ssize_t n = ::pread(fd_.get(), buf, sizeof buf - 1, 0);
  Record r;
  char name[32] = {};
  if (n > 0 && std::sscanf(buf, "serial=%lu pid=%ld holder=%31s", &r.serial,
                           &r.pid, name) == 3) {
    r.name = name;
    return r;
  }
  return {};  // new: nothing changed under it yet
}

unsigned long OutputLock::record(const std::string& name) {
  std::string line = fmt::format("serial={} pid={} holder={}\n", serial_ + 1,
                                 ::getpid(), name);
  ssize_t n = ::pwrite(fd_.get(), line.data(), line.size(), 0);
  if (n >= 0 && static_cast<size_t>(n) != line.size()) errno = EIO;
  if (n < 0 || static_cast<size_t>(n) != line.size() ||
      ::ftruncate(fd_.get(), static_cast<off_t>(line.size())) != 0) {
    throw errno_error("write", path_.string());
  }
  return ++serial_;
}

namespace {

// The process holding a flock() on the file `st` describes, from
// /proc/locks: "3: FLOCK  ADVISORY  WRITE 4242 fe:00:1234567 0 EOF" (a
// waiter's line has "->" before FLOCK). On a file system whose locks
// name the inode of a lower layer (overlayfs) only the inode matches.
long flock_pid(const struct stat& st) {
  std::FILE* f = std::fopen("/proc/locks", "re");
  if (!f) return 0;
  long exact = 0, by_inode = 0;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    char type[16];
    long pid;
    unsigned major, minor;
    unsigned long inode;
    if (std::sscanf(line, "%*s %15s %*s %*s %ld %x:%x:%lu", type, &pid, &major,
                    &minor, &inode) != 5 ||
        std::string_view(type) != "FLOCK" || inode != st.st_ino) {
      continue;
    }
    if (makedev(major, minor) == st.st_dev) exact = pid;
    by_inode = pid;
  }
  std::fclose(f);
  return exact ? exact : by_inode;
}

// "once" for a havenoro-relayd --once, "daemon" for havenoro-relayd
// otherwise, "" for anything else, from its command line.
std::string applier_name(long pid) {
  std::string argv;
  UniqueFd fd(::open(fmt::format("/proc/{}/cmdline", pid).c_str(),
                     O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return "";
  try {
    argv = read_all(fd.get(), "cmdline");
  } catch (const std::system_error&) {
    return "";
  }
  std::vector<std::string> args;
  for (size_t at = 0; at < argv.size();) {
    size_t end = argv.find('\0', at);
    if (end == std::string::npos) end = argv.size();
    args.push_back(argv.substr(at, end - at));
    at = end + 1;
  }
  if (std::count(args.begin(), args.end(), "--once")) return "once";
  if (!args.empty() && fs::path(args[0]).filename() == "havenoro-relayd") {
    return "daemon";
  }
  return "";
}

}  // namespace

LockHolder OutputLock::find_holder() const {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return {};
  LockHolder h{flock_pid(st), ""};
  if (h.pid == 0) return h;
  h.name = applier_name(h.pid);
  if (h.name.empty()) {
    // Another program, or another Applier of this one: what it recorded.
    Record r = read_record();
    if (r.pid == h.pid) h.name = r.name;
  }
  return h;
}

}  // namespace havenoro::apply
