#pragma once

#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/util/file_stamp.h"

namespace havenoro::apply {

/// Whether the Exim queue whose spool is `spool_dir` may hold a message:
/// false only when its input directory (and, with split_spool_directory,
/// each of its one-letter subdirectories) holds no message header file,
/// or does not exist yet in the spool directory. Anything it cannot read,
/// the spool directory itself among them, counts as mail.
bool queue_may_hold_mail(const std::filesystem::path& spool_dir);

/// Reads `spool_directory` from the configuration with `exim -bP`, as
/// Exim expands it; nothing when Exim fails or gives no absolute path.
std::optional<std::filesystem::path> exim_spool_directory(
    const std::filesystem::path& exim_binary,
    const std::filesystem::path& exim_config);

/// Sends mail held for a relay that was wrong, once it is fixed: without
/// it, the mail would wait for the next queue run (30 minutes on Debian)
/// or its retry time (hours). After an apply, it starts a forced queue run
/// for each sender domain whose credential file changed, or one for the
/// whole queue when the server-wide relay changed or many did. Exim reads
/// its whole configuration for a run, the cost of an `exim -bV`: with
/// nothing in the queue no run is started.
class HeldMailRetry {
 public:
  explicit HeldMailRetry(const config::DaemonConfig& config);

  /// Beyond this many sender domains, one run of the whole queue is
  /// cheaper than one per domain.
  static constexpr size_t kMaxDomainRuns = 20;

  /// Starts the runs for `senders` (the domains whose relay changed) and,
  /// with `everything`, the whole queue. Returns how many it started.
  int retry(const std::set<std::string>& senders, bool everything);

 private:
  bool queue_may_hold_mail();

  std::filesystem::path exim_binary_;
  std::filesystem::path exim_config_;
  bool looked_up_ = false;
  std::optional<util::FileStamp> config_stamp_;  ///< when looked up
  std::optional<std::filesystem::path> spool_;
};

}  // namespace havenoro::apply
