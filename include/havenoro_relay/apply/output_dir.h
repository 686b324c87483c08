#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "havenoro_relay/util/fd.h"
#include "havenoro_relay/util/file_stamp.h"

namespace havenoro::apply {

/// A file written under a temporary name, waiting for OutputDir::commit to
/// rename it into place.
struct StagedFile {
  std::filesystem::path path;  ///< final path, relative to the output dir
  std::string temp_name;       ///< name of the temporary in the same dir
};

/// The daemon's output directory. Every access goes through directory
/// handles opened with O_NOFOLLOW, so a symlink planted anywhere below the
/// root is refused rather than followed. Files are written as temporaries
/// in their own directory, owner and mode set, synced, then renamed over
/// the old file: Exim sees the old file or the new one, never a part.
class OutputDir {
 public:
  /// Opens (and creates) the directory. `group` owns every file so that
  /// Exim's delivery user can read them; the directory itself is made
  /// root:`group` 0750 if it is not (logged as `output_dir.repaired` when
  /// it already existed). Throws std::system_error, also for a symlink.
  OutputDir(std::filesystem::path root, gid_t group);

  const std::filesystem::path& root() const { return root_; }

  /// The contents of a regular file, or nothing when it does not exist.
  /// Throws std::system_error for a symlink or an unreadable file.
  std::optional<std::string> read(const std::filesystem::path& rel) const;

  /// The stamp of whatever is at `rel` (symlinks not followed), or
  /// nothing when there is nothing.
  std::optional<util::FileStamp> stamp(const std::filesystem::path& rel) const;

  /// True when anything (a file, a directory, a symlink) is at `rel`.
  bool exists(const std::filesystem::path& rel) const;

  /// True when `rel` is a regular file with exactly this content, `mode`,
  /// and owner root:group. A symlink never matches.
  bool matches(const std::filesystem::path& rel, const std::string& content,
               mode_t mode) const;

  /// Writes a temporary beside `rel` (creating missing directories, 0750);
  /// the file becomes visible only when committed.
  StagedFile stage(const std::filesystem::path& rel, const std::string& content,
                   mode_t mode);

  /// Makes staged files durable with one sync, renames each into place,
  /// then syncs again so the renames survive a crash. Files that need not
  /// survive one (a scratch copy) skip the syncs with `durable` false.
  void commit(const std::vector<StagedFile>& files, bool durable = true);

  /// Writes a file under its final name, created new (O_EXCL) with owner
  /// and mode set, not synced: for a scratch tree that nothing reads until
  /// it is complete, where a temporary and a rename per file would only
  /// double the work.
  void write_new(const std::filesystem::path& rel, const std::string& content,
                 mode_t mode);

  /// Makes files or directories durable: one fsync each for a few, one
  /// syncfs of the file system for many (a sync of the whole file system
  /// is the cheaper way for thousands of files, the costlier one for a
  /// few while other programs write).
  void make_durable(const std::vector<std::string>& rels);

  /// The same on another thread, so that the disk's wait overlaps other
  /// work (Exim's checks of the same files); the future reports it done
  /// or throws std::system_error. The paths are opened before it returns;
  /// {""} stands for the whole file system.
  std::future<void> make_durable_async(const std::vector<std::string>& rels);

  /// Up to this many paths are synced one by one; beyond, the file system.
  static constexpr size_t kMaxSyncEach = 32;

  /// Removes the staged temporaries of an abandoned write.
  void discard(const std::vector<StagedFile>& files) noexcept;

  /// Names in a directory (dot-files, the daemon's temporaries, left out);
  /// empty when the directory does not exist.
  std::vector<std::string> list(const std::filesystem::path& rel_dir) const;

  /// Creates a directory (0750, root:group) whose parent exists.
  void make_dir(const std::filesystem::path& rel);

  /// Renames within the output directory (atomic; replaces `to`).
  void rename(const std::filesystem::path& from,
              const std::filesystem::path& to);

  /// Removes a file, or a directory and everything in it. Missing is fine.
  void remove_all(const std::filesystem::path& rel);

  /// Removes what an interrupted apply left in `rel_dir`: temporaries
  /// (".*.tmp") and scratch directories (".new-*", ".old-*", ".check").
  void remove_leftovers(const std::filesystem::path& rel_dir);

  /// The target of a symlink, or nothing when there is none.
  std::optional<std::string> read_link(const std::filesystem::path& rel) const;

  /// Points the symlink `rel` at `target` with one rename, so a reader
  /// finds the old target or the new one, never no link.
  void replace_link(const std::filesystem::path& rel,
                    const std::string& target);

  /// Syncs the whole file system of the output directory.
  void sync();

  /// Opens the file `name` at the root for OutputLock: created empty,
  /// 0640 root:group, when missing; never through a symlink. Throws
  /// std::system_error, also when it is not a plain file of its own.
  util::UniqueFd open_lock_file(const char* name) const;

 private:
  // An open directory, shared with the cache; false when it is missing.
  class Dir {
   public:
    Dir(std::shared_ptr<util::UniqueFd> fd) : fd_(std::move(fd)) {}
    Dir(std::nullptr_t) {}
    explicit operator bool() const { return fd_ && fd_->valid(); }
    int get() const { return fd_->get(); }

   private:
    std::shared_ptr<util::UniqueFd> fd_;
  };

  // What makes `rels` durable: opened now, run later on any thread.
  std::function<void()> sync_job(const std::vector<std::string>& rels) const;

  // The directory `rel` below the root, opened one component at a time
  // with O_NOFOLLOW (missing ones created when `create` is set).
  Dir dir_fd(const std::filesystem::path& rel, bool create) const;
  // Sets the root's owner and mode through its handle when they are wrong.
  void own_root(bool created);
  // Forgets cached descriptors of `rel` and below, after it moved or went.
  void forget(const std::filesystem::path& rel) const;
  std::string temp_name(const std::string& base);

  std::filesystem::path root_;
  gid_t group_;
  std::shared_ptr<util::UniqueFd> root_fd_;
  unsigned long temp_counter_ = 0;
  // Directories of one apply, by relative path. An apply writes thousands
  // of files into a handful of directories; opening each path from the
  // root again cost more system calls than the writes themselves.
  mutable std::map<std::string, std::shared_ptr<util::UniqueFd>> dirs_;
};

/// Who holds an output directory's lock.
struct LockHolder {
  long pid = 0;      ///< 0: not known
  std::string name;  ///< "daemon", "once", or "" when not known
};

/// An exclusive flock() on the output directory's lock file, `.lock`: one
/// applier at a time per directory, across processes, and across the
/// OutputLocks of one process. Released when destroyed. The file stays:
/// removed while another waited on it, that one would lock a file that
/// the next applier no longer opens. It counts the holds that changed the
/// directory, and is written only by those: an apply that changes
/// nothing changes no file.
class OutputLock {
 public:
  static constexpr const char* kFile = ".lock";

  /// Takes the lock of `dir`, waiting up to `wait` while another holds
  /// it (logged as `apply.waiting` once it waited a second); held() is
  /// false when that one still holds it then. Throws std::system_error.
  OutputLock(const OutputDir& dir, std::chrono::milliseconds wait);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

  bool held() const { return held_; }

  /// When not held: who holds the lock, from /proc/locks and the
  /// holder's command line (or what it recorded).
  const LockHolder& holder() const { return holder_; }

  /// How many holds changed the directory, as the file says (read when
  /// the lock was taken, counted on by record()): a serial other than
  /// the one an applier last saw means that another one changed files.
  unsigned long serial() const { return serial_; }

  /// Notes in the file that this hold changed the directory: the next
  /// serial, which it returns, this process's pid and `name`. Only while
  /// held; throws std::system_error.
  unsigned long record(const std::string& name);

 private:
  struct Record {
    unsigned long serial = 0;
    long pid = 0;
    std::string name;
  };

  bool try_lock();
  bool wait_until(std::chrono::steady_clock::time_point start,
                  std::chrono::milliseconds wait);
  Record read_record() const;
  LockHolder find_holder() const;

  std::filesystem::path path_;
  util::UniqueFd fd_;
  bool held_ = false;
  LockHolder holder_;
  unsigned long serial_ = 0;
};

}  // namespace havenoro::apply
