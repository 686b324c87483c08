#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/engine/engine.h"

namespace havenoro::daemon {

/// Told when the apply that covered a request has finished.
using ApplyDone = std::function<void(const engine::ApplyOutcome&)>;

/// Work for the applying thread that is not an apply (config-test).
using EngineTask = std::function<void(engine::Engine&)>;

/// What the loop tells the daemon after each apply and each failure to
/// apply, on the applying thread.
struct ApplyObserver {
  std::function<void(const engine::ApplyOutcome&)> applied;
  /// A new configuration could not be put to use; the old one stays.
  std::function<void(const std::string& why)> engine_failed;
};

/// The one thread that runs the Engine. Other threads only queue work:
/// panel paths, domains to reconcile, resyncs, a new configuration. While
/// an apply runs, whatever arrives accumulates, and the next apply takes
/// all of it, so a burst of saves costs one or two applies and nothing
/// noted is lost. Status reads go straight to the Engine, which allows
/// them from any thread.
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

  /// Lets a running apply finish, drops what is still queued and joins
  /// the thread. Requests still waiting are answered with an outcome whose
  /// report says the daemon stopped.
  void stop();

  /// Notes changed panel paths.
  void note_paths(std::vector<std::filesystem::path> paths);

  /// Reconciles one domain ("" for the server-wide relay); `done` (may be
  /// empty) hears from the apply that covered it.
  void reconcile_domain(std::string domain, ApplyDone done);

  /// Re-reads the whole tree; `done` (may be empty) hears the outcome.
  void resync(ApplyDone done);

  /// Replaces the engine with one for `config` and resyncs; on failure the
  /// old engine stays and the observer hears why.
  void reconfigure(config::DaemonConfig config, ApplyDone done);

  /// Runs `task` on the applying thread, between applies.
  void run(EngineTask task);

  /// The engine's status document; any thread.
  nlohmann::json status() const;
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
  // Everything queued since the applying thread last looked.
  struct Batch {
    std::vector<std::filesystem::path> paths;
    std::vector<std::string> domains;
    bool resync = false;
    std::optional<config::DaemonConfig> config;
    std::vector<ApplyDone> waiters;
    std::vector<EngineTask> tasks;

    bool empty() const;
    size_t size() const;
  };

  void loop();
  Batch take_batch();
  void process(Batch& batch);
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
  bool stopping_ = false;
  unsigned long applies_ = 0;
  std::optional<std::chrono::steady_clock::time_point> busy_since_;
  std::thread thread_;
};

/// An outcome for requests that no apply will answer: the message says
/// why (the daemon stopped, the tree could not be read).
engine::ApplyOutcome failed_outcome(std::string message);

}  // namespace havenoro::daemon
