#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "havenoro_relay/apply/applier.h"
#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/model/relay_model.h"
#include "havenoro_relay/panel/panel_reader.h"
#include "havenoro_relay/status/delivery_log.h"

namespace havenoro::engine {

using Clock = std::chrono::system_clock;

/// What happened to one domain in an apply, as reconcile reports it.
struct DomainOutcome {
  std::string domain;
  /// "applied", "unchanged", "rejected", "removed", "held_back" (its
  /// removal waits for a confirmation) or "failed".
  std::string result;
  std::string route;    ///< "relay", "default", "suspended", "" when gone
  std::string message;  ///< the reason for rejected or failed; no secret
};

/// One apply: what it covered, what it did, how long it took.
struct ApplyOutcome {
  Clock::time_point started;
  std::chrono::milliseconds took{0};
  bool full = false;  ///< a resync of the whole tree, not a few changes
  apply::ApplyReport report;
  /// Domains this apply looked at. Not kept in the status' last apply.
  std::vector<DomainOutcome> domains;
  std::vector<std::string> problems;  ///< one line each, rejected settings
  /// The server-wide relay's problem (also in `problems`), or empty.
  std::string server_problem;

  /// "applied", "unchanged", "rejected" (something was left out or held
  /// back) or "failed": nothing of the candidate went live, or, when
  /// every error is one file's (report.failed_whole() false), the other
  /// domains' files did.
  std::string result() const;
};

/// The core of the daemon: holds the panel's settings as last read, the
/// relay model built from them, and the status of the last apply. Panel
/// changes are noted cheaply and applied in one go, so a burst of saves
/// costs one apply; the cost of an apply grows with what changed, not with
/// the number of domains. One thread applies (resync, note_*,
/// apply_pending, plan); status(), domain_list() and domain() may be
/// called from any thread meanwhile: they wait only for the short moments
/// in which the in-memory model changes, never for Exim or the disk.
class Engine {
 public:
  explicit Engine(config::DaemonConfig config);

  /// How a full resync may go further than an ordinary one.
  struct ResyncOptions {
    /// Remove relay domains even when most of them vanished at once
    /// (otherwise held back: a panel tree that is not mounted looks so).
    bool confirm_removals = false;
    /// End a rollback's pin: render the snippets again.
    bool release_pin = false;
  };

  /// Re-reads the whole panel tree and applies it. Throws panel::PanelError
  /// when the tree cannot be read; nothing is changed then.
  ApplyOutcome resync(ResyncOptions options);
  ApplyOutcome resync() { return resync(ResyncOptions{}); }

  /// Makes a kept generation live again (by default the one before the
  /// live one) and pins it until a resync with release_pin.
  ApplyOutcome rollback(std::optional<unsigned long> generation);

  /// The generations kept on disk, oldest first.
  std::vector<unsigned long> generations() const;

  /// Reads what Exim appended to its main log since the last call, for
  /// the per-domain last delivery and last failure that domain() shows.
  /// Cheap; meant to be called every few seconds. Returns lines read.
  size_t poll_deliveries();

  /// Notes that `path` (absolute, below the panel root) was created,
  /// written, renamed or removed. Paths that are not settings are ignored.
  void note_path(const std::filesystem::path& path);

  /// Notes that a domain (or "" for the server-wide relay) must be re-read,
  /// wherever its file is now.
  void note_domain(const std::string& domain);

  /// True when something was noted since the last apply.
  bool has_pending() const;

  /// Re-reads what was noted and applies it.
  ApplyOutcome apply_pending();

  /// Renders and checks the panel's current settings without applying:
  /// what an apply would write and remove, and what it would reject.
  nlohmann::json plan();

  /// The daemon's configuration, to be replaced on SIGHUP by a new Engine.
  const config::DaemonConfig& config() const { return config_; }

  /// A status document. Keys: docs/control-protocol.md.
  nlohmann::json status() const;

  /// The status document as of the last apply, without `uptime_s`: built
  /// once per apply and shared by every reader. A different pointer means
  /// a different document. Any thread; never waits for an apply.
  std::shared_ptr<const nlohmann::json> status_snapshot() const;

  /// Why the server-wide relay's settings are rejected; empty when they
  /// are not. Any thread.
  std::optional<std::string> server_error() const;

  /// One entry per known domain: name, user, route, last error.
  nlohmann::json domain_list() const;

  /// One domain's effective route and why, and its last error; null when
  /// the domain is unknown.
  nlohmann::json domain(const std::string& name) const;

 private:
  struct Reread;

  Reread reread_pending();
  void rescan_user(const std::string& user, Reread& into);
  void reread_file(const std::string& user, const std::string& stem,
                   Reread& into);
  bool locate_domain(const std::string& name, Reread& into);
  ApplyOutcome rescan(ResyncOptions options);
  Reread scan_changes();
  void rescan_changed(int users_fd, const std::string& user, Reread& into);
  static bool same_as_read(const panel::DomainEntry& entry,
                           const std::string& stem,
                           const util::FileStamp& stamp,
                           const std::vector<util::StampedName>& files);
  void merge(Reread& r);
  static void merge_into(Reread& into, Reread&& from);
  void clear_pending();
  ApplyOutcome apply_scope(
      const std::set<std::string>& names, bool server, bool full,
      bool confirm_removals = false,
      std::optional<std::set<std::string>> changed = std::nullopt);
  DomainOutcome outcome_of(
      const std::string& name, const apply::ApplyReport& report,
      const std::set<std::string>& touched,
      const std::map<std::string, std::vector<std::string>>& failed) const;
  bool record_errors(const std::set<std::string>& names, bool server);
  void note_kept_live(const std::set<std::string>& names,
                      const std::optional<std::set<std::string>>& changed);
  std::string rejection_text(const std::string& name) const;
  nlohmann::json domain_json(const std::string& name) const;
  nlohmann::json live_route(const std::string& name) const;
  void note_exim(const ApplyOutcome& outcome);
  void locate_elsewhere(const std::set<std::string>& names, Reread& into);
  void refresh_status_cache() const;
  std::optional<Clock::time_point> shown_apply() const;

  config::DaemonConfig config_;
  panel::RelayRules rules_;
  apply::Applier applier_;
  Clock::time_point started_ = Clock::now();

  // The panel as last read: users, and domain files by domain name (a name
  // may appear under two users, which is an error for both).
  std::map<std::string, panel::UserEntry> users_;
  std::map<std::string, model::DomainFiles> domains_;
  /// Each user's domain files, pointing into domains_ (map nodes stay
  /// where they are): a resync finds a listed file's stamp among its
  /// user's few rather than among all domains.
  std::map<std::string, std::map<std::string, const panel::DomainEntry*>>
      user_domains_;
  panel::Parsed<std::optional<panel::RelaySettings>> server_;
  model::RelayModel model_;

  bool read_once_ = false;  ///< the whole tree was read; rescans follow

  // Noted since the last apply.
  std::set<std::string> pending_users_;  ///< rescan user dir and user.json
  std::set<std::pair<std::string, std::string>> pending_files_;  ///< user, stem
  std::set<std::string> pending_domains_;  ///< by name, wherever they are
  bool pending_server_ = false;
  bool pending_full_ = false;

  // Errors by domain ("" = server-wide relay), with when first seen; kept
  // in the output directory too, so that a restart or a SIGHUP keeps the
  // times. Only the applying thread changes it, under mutex_.
  std::map<std::string, std::pair<std::string, Clock::time_point>> errors_;
  /// What stays live for each rejected domain, said after its rejection:
  /// looked up in the live files when it is rejected, not at every resync.
  std::map<std::string, std::string> kept_live_;

  std::optional<ApplyOutcome> last_apply_;
  nlohmann::json last_exim_;  ///< Exim's state as last confirmed
  nlohmann::json pinned_;     ///< a rollback's pin, as the last apply left it
  status::DeliveryLog deliveries_;

  // Held exclusively by the applying thread only while it changes the
  // members above; shared by the status readers.
  mutable std::shared_mutex mutex_;

  // The status document as last built, and the start of the apply it
  // shows (empty before the first): readers share it, the applying thread
  // replaces it.
  mutable std::mutex status_mutex_;  ///< after mutex_, never before
  mutable std::shared_ptr<const nlohmann::json> status_cache_;
  mutable std::optional<Clock::time_point> status_of_;
};

}  // namespace havenoro::engine
