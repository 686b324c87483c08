#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "havenoro_relay/apply/held_mail.h"
#include "havenoro_relay/apply/live_files.h"
#include "havenoro_relay/candidate/exim_check.h"
#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/model/relay_model.h"
#include "havenoro_relay/render/snippets.h"

namespace havenoro::apply {

/// Which part of the model an apply looks at. An apply of a few domains
/// touches only their files, whatever the size of the model.
struct ApplyScope {
  bool everything = true;         ///< every domain and the server relay
  std::set<std::string> domains;  ///< otherwise: these domains ...
  bool server = false;            ///< ... and the server-wide relay if set
  /// Remove relay domains even when most of them vanish at once (see
  /// DaemonConfig::mass_removal_percent); otherwise such a removal is
  /// held back, in a full apply as in one of a few domains.
  bool confirm_removals = false;
  /// For `everything`: the domains whose settings changed since the last
  /// apply, when known. If the output directory is then exactly as the
  /// last apply left it, only these are compared with the model.
  std::optional<std::set<std::string>> changed;

  static ApplyScope all() { return {}; }
  static ApplyScope of(std::set<std::string> domains, bool server) {
    return {false, std::move(domains), server, false, {}};
  }
};

/// What one apply did (or, for a plan, would do).
struct ApplyReport {
  unsigned long generation = 0;  ///< live generation afterwards (0: none)
  bool new_generation = false;   ///< the snippets changed
  bool reloaded = false;         ///< Exim was signalled and came back
  bool pinned = false;     ///< snippet changes held: a rollback is in force
  std::string exim_state;  ///< what the reload found, when it ran
  /// Exim's main log, when a reload or restart was confirmed without it
  /// (it could not be read): only pid and port confirmed it.
  std::string exim_log_unread;
  std::vector<std::string> written;  ///< files written, relative paths
  std::vector<std::string> removed;  ///< files or directories removed
  std::vector<std::string> errors;   ///< why the apply failed, if it did
  /// The errors of `errors` that concern one file only (a planted
  /// symlink, a DKIM key that changed while it was applied), with its
  /// relative path: only that file's domain failed, the other files of
  /// the apply went live.
  std::vector<std::pair<std::string, std::string>> path_errors;
  /// What was left undone on purpose (a mass removal waiting for a
  /// confirmation); the rest of the apply went live.
  std::vector<std::string> held_back;
  /// The domains whose removal is held back.
  std::set<std::string> held_domains;

  bool ok() const { return errors.empty(); }
  /// True when an error concerns the whole apply (Exim rejected the
  /// candidate or did not come back, a removal stopped), not one file.
  bool failed_whole() const { return errors.size() > path_errors.size(); }
  /// Notes an error that concerns the file at `path` only.
  void path_failed(const std::string& path, std::string message) {
    errors.push_back(message);
    path_errors.emplace_back(path, std::move(message));
  }
  bool unchanged() const {
    return ok() && !new_generation && written.empty() && removed.empty();
  }
};

/// The domain a relative output path belongs to ("domains/d/...",
/// "suspended/d", "dkim/d/..."); "" for the server-wide relay and the
/// generation files.
std::string domain_of_path(const std::string& path);

/// What Exim finds for one domain in the live files now: "relay" (with
/// the credential file's host:port), "suspended" or "default".
struct LiveRoute {
  std::string route;
  std::string relay;
};

/// Turns a relay model into the live Exim files: renders the snippets and
/// credential files, checks the candidate with the real Exim, writes what
/// differs from what is live, switches generations in one rename and
/// reloads Exim only when the snippets changed. A candidate Exim rejects
/// changes nothing that is live. A domain whose settings were rejected
/// keeps whatever it has live. One applier at a time works on an output
/// directory (the daemon's, a `--once`): apply(), plan() and rollback()
/// each hold its OutputLock throughout.
class Applier {
 public:
  explicit Applier(config::DaemonConfig config);

  /// How long the daemon's applies wait for another applier: a `--once`
  /// takes seconds at 10,000 domains, more with an Exim reload and a
  /// restart. A busy apply fails; its changes wait for the next resync.
  static constexpr std::chrono::seconds kDaemonLockWait{120};

  /// Names this Applier to the others on its output directory ("daemon",
  /// the default, or "once") and bounds how long apply(), plan(),
  /// rollback() and hold() wait while another holds the lock.
  void set_lock_wait(std::string name, std::chrono::milliseconds wait);

  /// The output directory's lock, held (see held()) for as long as this
  /// lives: the Applier's apply(), plan() and rollback() meanwhile take
  /// no lock of their own, and no other applier on the directory, in
  /// this process or another, works on it.
  class Hold {
   public:
    bool held() const { return lock_ && lock_->held(); }
    /// Who holds the lock, when it is not held.
    LockHolder holder() const { return lock_ ? lock_->holder() : LockHolder{}; }
    /// Why it is not held, one line naming the holder; empty when held.
    const std::string& busy() const { return busy_; }

   private:
    friend class Applier;
    std::shared_ptr<OutputLock> lock_;
    std::string busy_;
  };

  /// Takes the lock for several steps (a read of the panel tree, then an
  /// apply), waiting as set_lock_wait() says. Throws std::system_error
  /// for the unexpected (a symlink at the lock file's path).
  Hold hold();

  /// Applies the part of `model` in `scope`. Expected failures are
  /// reported in the result, among them a lock that another applier
  /// kept for longer than the wait (then nothing changed); throws only
  /// for the unexpected (std::system_error from the file system).
  ApplyReport apply(const model::RelayModel& model,
                    const ApplyScope& scope = ApplyScope::all());

  /// What apply() would write and remove, with the candidate checked by
  /// Exim; nothing live changes.
  ApplyReport plan(const model::RelayModel& model);

  /// Makes a kept generation live again (by default the one before the
  /// live one), checked by Exim first, and pins it: later applies still
  /// change per-domain data but no longer snippets, until release_pin().
  ApplyReport rollback(std::optional<unsigned long> generation);

  /// Takes the stamps of the live files for the next apply, which then
  /// compares them without a system call each. Meant to run on another
  /// thread while the panel tree is read; nothing else may use the
  /// Applier meanwhile. Skipped while another applier holds the lock;
  /// the stamps are dropped if one held it before the apply.
  void prefetch();

  /// Starts the lookup check (`exim -be`) that an apply of these few
  /// domains alone will run, on the live generation, so that Exim reads
  /// its configuration while the apply prepares the candidate; route
  /// probes start once the rendered files show they are needed. The next
  /// apply uses it if it fits and drops it otherwise. Does nothing for
  /// more than a few names or before the first apply.
  void prepare(const std::set<std::string>& names);

  /// Lets the next apply render the snippets again after a rollback.
  void release_pin();

  /// The route a domain has in the live files, whatever the model says
  /// now (what a rejected save leaves in force). Reads only the route
  /// line, never the credentials; symlinks are refused as anywhere.
  LiveRoute live_route(const std::string& name) const;
  /// live_route() of several domains, through one directory handle.
  std::map<std::string, LiveRoute> live_routes(
      const std::vector<std::string>& names) const;

  /// The generations kept on disk, oldest first, and the live one.
  std::vector<unsigned long> kept_generations() const;

  /// The generation a rollback pinned, while it is the live one (the pin
  /// holds only the live snippets); empty without a pin in force. Reads
  /// two small entries, like live_route(). Throws std::system_error.
  std::optional<unsigned long> pinned() const;

 private:
  ApplyReport run(const model::RelayModel& model, const ApplyScope& scope,
                  bool dry_run);
  OutputDir output_dir() const;
  void sweep(OutputDir& out);
  bool untouched(const OutputDir& out);
  void note_in_sync(const OutputDir& out, const ApplyScope& scope,
                    const ApplyReport& report);
  std::shared_ptr<OutputLock> lock(const OutputDir& out);
  void take_over(const OutputLock& lock);
  void note_changed(OutputLock& lock);
  std::string busy_text(const OutputLock& lock) const;
  ApplyReport busy(const OutputDir& out, const OutputLock& lock);

  config::DaemonConfig config_;
  std::optional<gid_t> exim_gid_;  ///< of config_.exim_group, when known
  render::SnippetCache snippet_cache_;
  HeldMailRetry held_mail_;
  /// From prepare(): the lookup check.
  std::vector<candidate::StartedCheck> ready_;
  LiveFiles live_files_;  ///< what the last applies wrote or verified
  bool swept_ = false;    ///< leftovers of an earlier process looked for
  /// The output directory holds what the model wanted at the end of the
  /// last apply, every file of it recorded in live_files_, and the lookup
  /// directories had these stamps then.
  bool in_sync_ = false;
  std::vector<std::optional<util::FileStamp>> dir_stamps_;

  std::string lock_name_ = "daemon";
  std::chrono::milliseconds lock_wait_ = kDaemonLockWait;
  std::weak_ptr<OutputLock> hold_;  ///< of the Hold in force, if any
  /// The lock file's serial as this Applier last saw or wrote it: another
  /// one means that another applier changed files in between.
  std::optional<unsigned long> known_serial_;
  /// The lock file's serial when prefetch() took its stamps.
  std::optional<unsigned long> prefetch_serial_;
};

}  // namespace havenoro::apply
