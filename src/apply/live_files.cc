#include "havenoro_relay/apply/live_files.h"

#include <functional>

namespace havenoro::apply {

bool LiveFiles::same(const OutputDir& out, const std::string& path,
                     const std::string& content, mode_t mode) {
  size_t hash = std::hash<std::string>{}(content);
  if (same_hash(out, path, hash)) return true;
  if (!out.matches(path, content, mode)) {
    seen_.erase(path);
    return false;
  }
  if (auto stamp = out.stamp(path)) seen_[path] = {*stamp, hash, {}};
  return true;
}

void LiveFiles::wrote(const OutputDir& out, const std::string& path,
                      const std::string& content) {
  wrote_hash(out, path, std::hash<std::string>{}(content));
}

bool LiveFiles::same_hash(const OutputDir& out, const std::string& path,
                          size_t hash) {
  auto it = seen_.find(path);
  return it != seen_.end() && it->second.hash == hash &&
         stamp_now(out, path, it->second) == it->second.stamp;
}

void LiveFiles::wrote_hash(const OutputDir& out, const std::string& path,
                           size_t hash) {
  if (auto stamp = out.stamp(path)) {
    seen_[path] = {*stamp, hash, {}};
  } else {
    seen_.erase(path);
  }
}

std::optional<util::FileStamp> LiveFiles::stamp_now(const OutputDir& out,
                                                    const std::string& path,
                                                    const Seen& seen) const {
  return prefetched_ ? seen.now : out.stamp(path);
}

void LiveFiles::prefetch(const OutputDir& out) {
  for (auto& [path, seen] : seen_) seen.now = out.stamp(path);
  prefetched_ = true;
}

bool LiveFiles::all_unchanged(const OutputDir& out) const {
  for (const auto& [path, seen] : seen_) {
    if (stamp_now(out, path, seen) != seen.stamp) return false;
  }
  return true;
}

void LiveFiles::forget(const std::string& path) {
  seen_.erase(path);
}

}  // namespace havenoro::apply
