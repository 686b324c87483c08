#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "havenoro_relay/util/fd.h"

namespace havenoro::daemon {

/// What the watcher saw since it was last read.
struct PanelChanges {
  /// Paths created, written, renamed or removed below the panel root.
  std::set<std::filesystem::path> paths;
  /// Events were lost (the kernel's queue overflowed): only a full resync
  /// can be trusted now.
  bool overflow = false;
  /// The panel root itself was moved, removed or unmounted: nothing below
  /// it is watched until rescan() finds a root again.
  bool root_gone = false;
  /// Directories that could not be watched, one line each.
  std::vector<std::string> warnings;
};

/// Watches the panel tree with inotify: conf/, data/users/, every user's
/// directory and every mail/ directory, adding watches as directories
/// appear and dropping them as they go. A file counts once it is closed
/// after writing or renamed into place, never while it is being written.
class PanelWatcher {
 public:
  /// Sets up inotify for the tree below `panel_root`; rescan() adds the
  /// first watches. Throws std::system_error when inotify itself cannot be
  /// set up.
  explicit PanelWatcher(std::filesystem::path panel_root);

  /// The inotify descriptor, non-blocking: readable when events wait.
  int fd() const { return fd_.get(); }

  /// Reads every queued event without blocking and returns the changes.
  PanelChanges read_changes();

  /// Watches every directory of the tree that exists (the rest is watched
  /// as it appears): at start, and again after events were lost or the
  /// root went. A root that is another directory than the one watched
  /// (replaced with no event seen) has its tree watched afresh. Returns
  /// the directories below the root it could not watch; the root's own
  /// failure is has_root() and root_error().
  std::vector<std::string> rescan();

  /// Whether the panel root is watched: false until rescan() finds it,
  /// and from the moment it is moved, removed or unmounted.
  bool has_root() const { return root_wd_ >= 0; }

  /// Why the last rescan() could not watch the root; empty when it could.
  const std::string& root_error() const { return root_error_; }

  /// How many directories are watched.
  size_t watch_count() const { return dirs_.size(); }

 private:
  int add_tree(const std::filesystem::path& dir, PanelChanges* found,
               std::vector<std::string>& warnings);
  void drop_tree(const std::filesystem::path& dir);
  void lose_root();
  void handle(int wd, uint32_t mask, const std::string& name,
              PanelChanges& out);
  bool is_watched_dir(const std::filesystem::path& dir) const;

  std::filesystem::path root_;
  util::UniqueFd fd_;
  std::map<int, std::filesystem::path> dirs_;  ///< by watch descriptor
  int root_wd_ = -1;                           ///< -1: the root is not watched
  std::pair<dev_t, ino_t> root_id_{};          ///< the watched root's inode
  std::string root_error_;
};

}  // namespace havenoro::daemon
