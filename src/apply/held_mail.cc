#include "havenoro_relay/apply/held_mail.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <string_view>

#include "havenoro_relay/util/fd.h"
#include "havenoro_relay/util/file_stamp.h"
#include "havenoro_relay/util/process.h"

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;

// The queue runs are the daemon's own work too: the mail Exim is
// delivering anyway comes first.
constexpr int kQueueRunNice = 10;

constexpr std::chrono::seconds kLookupTimeout{10};

enum class Found { kNothing, kMail, kUnknown };

// Looks through one spool directory for a message's header file
// ("<id>-H"); with `descend`, through its one-letter subdirectories too
// (split_spool_directory). Stops at the first one.
Found scan(int parent, const char* name, bool descend) {
  int fd =
      ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? Found::kNothing : Found::kUnknown;
  DIR* dir = ::fdopendir(fd);
  if (!dir) {
    ::close(fd);
    return Found::kUnknown;
  }
  Found found = Found::kNothing;
  while (dirent* e = ::readdir(dir)) {
    std::string_view entry = e->d_name;
    if (entry == "." || entry == "..") continue;
    if (entry.ends_with("-H")) {
      found = Found::kMail;
      break;
    }
    if (descend && entry.size() == 1) {
      found = scan(::dirfd(dir), e->d_name, false);
      if (found != Found::kNothing) break;
    }
  }
  ::closedir(dir);
  return found;
}

}  // namespace

bool queue_may_hold_mail(const fs::path& spool_dir) {
  // Without its spool directory there is no telling where Exim keeps its
  // queue now; an input directory not made yet means no message ever.
  util::UniqueFd spool(
      ::open(spool_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!spool.valid()) return true;
  return scan(spool.get(), "input", true) != Found::kNothing;
}

std::optional<fs::path> exim_spool_directory(const fs::path& exim_binary,
                                             const fs::path& exim_config) {
  auto listed =
      util::run_process({exim_binary.string(), "-C", exim_config.string(),
                         "-bP", "spool_directory"},
                        "", kLookupTimeout);
  constexpr std::string_view kPrefix = "spool_directory = ";
  std::string_view out = listed.out;
  if (listed.exit_code != 0 || !out.starts_with(kPrefix)) return {};
  out.remove_prefix(kPrefix.size());
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
    out.remove_suffix(1);
  }
  // Exim prints the value expanded, as it uses it.
  if (!out.starts_with('/')) return {};
  return fs::path(out);
}

HeldMailRetry::HeldMailRetry(const config::DaemonConfig& config)
    : exim_binary_(config.exim_binary), exim_config_(config.exim_config) {}

bool HeldMailRetry::queue_may_hold_mail() {
  // Looked up again only when Exim's configuration file changed: the
  // spool directory is a setting of its main section.
  auto stamp = util::stamp_at(AT_FDCWD, exim_config_.c_str());
  if (!looked_up_ || stamp != config_stamp_) {
    looked_up_ = true;
    config_stamp_ = stamp;
    spool_ = exim_spool_directory(exim_binary_, exim_config_);
  }
  return !spool_ || apply::queue_may_hold_mail(*spool_);
}

int HeldMailRetry::retry(const std::set<std::string>& senders,
                         bool everything) {
  if (senders.empty() && !everything) return 0;
  if (!queue_may_hold_mail()) return 0;
  std::vector<std::string> base = {exim_binary_.string(), "-C",
                                   exim_config_.string()};
  if (everything || senders.size() > kMaxDomainRuns) {
    // -qf: every message, before its retry time.
    base.push_back("-qf");
    util::spawn_detached(base, kQueueRunNice);
    return 1;
  }
  int started = 0;
  for (const auto& domain : senders) {
    // -S matches the sender, case-independently; f forces delivery
    // before the retry time.
    auto argv = base;
    argv.push_back("-Sf");
    argv.push_back("@" + domain);
    started += util::spawn_detached(argv, kQueueRunNice) > 0;
  }
  return started;
}

}  // namespace havenoro::apply
