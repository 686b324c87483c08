#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <unordered_map>

#include "havenoro_relay/apply/output_dir.h"
#include "havenoro_relay/util/file_stamp.h"

namespace havenoro::apply {

/// What the applier last wrote or verified in the output directory, by
/// relative path. A file whose stamp is unchanged since then, compared
/// with the same content, is known to be the same without reading it: a
/// resync of 10,000 domains then costs one fstatat per live file.
class LiveFiles {
 public:
  /// True when `path` is a regular file with exactly this content, `mode`
  /// and owner (as OutputDir::matches), read only when its stamp changed.
  bool same(const OutputDir& out, const std::string& path,
            const std::string& content, mode_t mode);

  /// True when `path` is still what was recorded for a text of this hash;
  /// false when it cannot tell without the text (nothing is read).
  bool same_hash(const OutputDir& out, const std::string& path, size_t hash);

  /// Notes that `path` now holds a text of this hash, as just written.
  void wrote_hash(const OutputDir& out, const std::string& path, size_t hash);

  /// Notes that `path` now holds `content`, as just written.
  void wrote(const OutputDir& out, const std::string& path,
             const std::string& content);

  /// Takes the stamp of every file it knows now, for the next same()
  /// calls to use instead of asking the disk one by one: a resync runs
  /// this beside its reading of the panel tree. Ends with end_prefetch().
  void prefetch(const OutputDir& out);
  void end_prefetch() { prefetched_ = false; }

  /// True when every file it knows has the stamp it had when recorded
  /// (from the prefetch, when one was taken).
  bool all_unchanged(const OutputDir& out) const;

  /// Forgets `path` (a file removed).
  void forget(const std::string& path);

  size_t size() const { return seen_.size(); }

 private:
  struct Seen {
    util::FileStamp stamp;
    size_t hash = 0;
    std::optional<util::FileStamp> now;  ///< as prefetched
  };
  std::optional<util::FileStamp> stamp_now(const OutputDir& out,
                                           const std::string& path,
                                           const Seen& seen) const;

  std::unordered_map<std::string, Seen> seen_;
  bool prefetched_ = false;
};

}  // namespace havenoro::apply
