#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/engine/engine.h"

namespace havenoro::daemon {

/// An apply's outcome, shared by everyone who waited for it.
using SharedOutcome = std::shared_ptr<const engine::ApplyOutcome>;

/// Told when the apply that covered a request has finished; told a null
/// outcome when the loop stopped before an apply took the request (what
/// is queued at a stop is dropped, for the next start's resync to find).
using ApplyDone = std::function<void(const SharedOutcome&)>;

/// Work for the applying thread that is not an apply (config-test).
using EngineTask = std::function<void(engine::Engine&)>;

/// Told instead of running a task when the loop stopped before it ran.
using TaskDropped = std::function<void()>;

/// What the loop tells the daemon after each apply and each failure to
/// apply, on the applying thread.
struct ApplyObserver {
  std::function<void(const engine::ApplyOutcome&)> applied;
  /// A new configuration could not be put to use; the old one stays.
  std::function<void(const std::string& why)> engine_failed;
};

/// When the applying thread takes what is queued. Changes of one domain
/// (a save and its save hook) are applied at once. Changes of several
/// domains (a bulk edit under way) are gathered until the queue has been
/// quiet for `quiet`, at most `max_hold` after the applying thread began
/// to wait for them, so that hundreds of saves cost a few applies.
struct Coalescing {
  using TimePoint = std::chrono::steady_clock::time_point;

  std::chrono::milliseconds quiet{25};
  std::chrono::milliseconds max_hold{1000};

  /// When to take a batch: `bulk` says whether it holds changes of more
  /// than one domain, `last_added` when something was last queued,
  /// `held_since` when the applying thread began to wait.
  TimePoint take_at(bool bulk, TimePoint last_added,
                    TimePoint held_since) const;
};

/// Whether queued changes are about more than one domain: paths below the
/// panel root (a save writes `.<domain>.json.tmp`, then renames it to
/// `<domain>.json`) and names to reconcile ("" for the server-wide relay,
/// as `conf/mail.json`).
bool several_domains(const std::vector<std::filesystem::path>& paths,
                     const std::vector<std::string>& domains);

/// The one thread that runs the Engine. Other threads only queue work:
/// panel paths, domains to reconcile, resyncs, a new configuration. While
/// an apply runs, whatever arrives accumulates, and the next apply takes
/// all of it (see Coalescing), so a burst of saves costs a few applies
/// and nothing noted is lost. Status reads go straight to the Engine,
/// which allows them from any thread.
class ApplyLoop {
 public:
  /// Takes the engine to run; the first apply is a full resync.
  ApplyLoop(std::unique_ptr<engine::Engine> engine, ApplyObserver observer);

  /// Stops the loop (see stop()).
  ~ApplyLoop();

  ApplyLoop(const ApplyLoop&) = delete;
  ApplyLoop& operator=(const ApplyLoop&) = delete;

  /// Starts the applying thread.
  void start();

  /// Takes no more work, lets a running apply finish (its requests hear
  /// it), joins the thread and drops what is still queued: its requests
  /// hear a null outcome, its tasks are dropped. Work queued from then on
  /// is dropped at once, the same way, so nothing waits for good.
  void stop();
  /// The first half of stop(), which returns at once: takes no more work
  /// and drops what is queued (its requests hear a null outcome), while
  /// a running apply goes on. stop() then joins it.
  void begin_stop();

  /// Notes changed panel paths.
  void note_paths(std::vector<std::filesystem::path> paths);

  /// Reconciles one domain ("" for the server-wide relay); `done` (may be
  /// empty) hears from the apply that covered it: the next one, which
  /// takes everything noted before. Or the apply now running, when it
  /// took a change of the domain's file (note_paths) and nothing was
  /// noted since: the save hook's request, sent once the panel's save is
  /// done, needs no apply of its own. The caller notes what the watcher
  /// saw before the request first.
  void reconcile_domain(std::string domain, ApplyDone done);

  /// Re-reads the whole tree; `done` (may be empty) hears the outcome.
  void resync(ApplyDone done);

  /// Replaces the engine with one for `config` and resyncs; on failure the
  /// old engine stays and the observer hears why.
  void reconfigure(config::DaemonConfig config, ApplyDone done);

  /// Runs `task` on the applying thread, between applies; or calls
  /// `dropped` (may be empty) instead, when the loop stops first.
  void run(EngineTask task, TaskDropped dropped = {});

  /// The configuration of the engine in use, copied; any thread. Never
  /// waits for an apply: the engine's configuration does not change.
  config::DaemonConfig config() const;
  /// The engine's status document as last built, shared; any thread.
  std::shared_ptr<const nlohmann::json> status_snapshot() const;
  /// Why the server-wide relay is rejected, if it is; any thread.
  std::optional<std::string> server_error() const;
  /// The engine's domain list; any thread.
  nlohmann::json domain_list() const;
  /// One domain, or null; any thread.
  nlohmann::json domain(const std::string& name) const;

  /// How many applies have run since start.
  unsigned long applies() const;
  /// How many requests are queued and not yet taken by an apply.
  size_t queued() const;

  /// When the apply (or task) now running started; empty while idle.
  std::optional<std::chrono::steady_clock::time_point> busy_since() const;

 private:
  struct Task {
    EngineTask run;
    TaskDropped dropped;
  };

  // Everything queued since the applying thread last looked.
  struct Batch {
    std::vector<std::filesystem::path> paths;
    std::vector<std::string> domains;
    bool resync = false;
    std::optional<config::DaemonConfig> config;
    std::vector<ApplyDone> waiters;
    std::vector<Task> tasks;

    bool empty() const;
    size_t size() const;
    /// Changes of more than one domain, and nothing else.
    bool bulk() const;
    /// Panel changes or requests to re-read, not only tasks.
    bool has_changes() const;
  };

  // The apply now running: the domains whose saved files it reads after
  // the watcher saw them change, and the reconciles that joined it.
  struct InFlight {
    bool open = false;
    std::set<std::string> saved;
    std::vector<ApplyDone> waiters;
  };

  void loop();
  Batch take_batch();
  bool process(Batch& batch);  ///< true after a large apply
  void answer(std::vector<ApplyDone>& waiters,
              std::optional<engine::ApplyOutcome> outcome);
  static size_t drop(Batch& batch);  ///< how many requests were told
  std::optional<engine::ApplyOutcome> apply(Batch& batch);
  void swap_engine(config::DaemonConfig config);
  std::shared_ptr<engine::Engine> current() const;
  void enqueue(const std::function<void(Batch&)>& add);

  ApplyObserver observer_;
  bool resync_next_ = false;  ///< applying thread only

  mutable std::mutex engine_mutex_;  ///< guards the pointer, not the engine
  std::shared_ptr<engine::Engine> engine_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  Batch queued_;
  InFlight in_flight_;
  Coalescing coalescing_;
  std::chrono::steady_clock::time_point last_added_;
  bool stopping_ = false;
  unsigned long applies_ = 0;
  std::optional<std::chrono::steady_clock::time_point> busy_since_;
  std::thread thread_;
};

}  // namespace havenoro::daemon
