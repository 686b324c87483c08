#include "havenoro_relay/daemon/daemon.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <csignal>

#include "havenoro_relay/daemon/control_commands.h"
#include "havenoro_relay/daemon/log_event.h"
#include "havenoro_relay/daemon/relay_test.h"

namespace havenoro::daemon {
namespace {

// An apply that runs this long is stuck (every Exim call it makes has its
// own, shorter, time limit): the watchdog stops hearing from us, and
// systemd restarts the daemon.
constexpr std::chrono::minutes kStuckApply{3};

// Threads of the control socket, each with its own io_context: a round of
// status requests from many clients uses both cores of a small server.
constexpr int kControlThreads = 2;

// How long a stop waits for the control threads to close every
// connection before it goes on regardless.
constexpr std::chrono::seconds kCloseWait{2};

// How often Exim's main log is read for each domain's last delivery; a
// person looking at `domain D` after a test message waits no longer.
constexpr std::chrono::seconds kDeliveryPoll{5};

// How often a panel root that went away is looked for again: a rename
// back or a restore takes seconds, and each look is one lstat().
constexpr std::chrono::seconds kRewatchInterval{2};

}  // namespace

ControlLimits control_limits(const config::DaemonConfig& config) {
  ControlLimits limits;
  limits.max_request_bytes = config.max_request_bytes;
  limits.idle_timeout = config.idle_timeout;
  return limits;
}

Daemon::Daemon(std::filesystem::path config_file, config::DaemonConfig config)
    : config_file_(std::move(config_file)),
      config_(std::move(config)),
      signals_(io_, SIGTERM, SIGINT, SIGHUP),
      resync_timer_(io_),
      watchdog_timer_(io_),
      delivery_timer_(io_),
      info_(config_file_) {
  spdlog::info(LogEvent("daemon.start")
                   .add("version", HAVENORO_VERSION)
                   .add("config", config_file_.string())
                   .add("panel_root", config_.panel_root.string())
                   .add("output_dir", config_.output_dir.string())
                   .str());
  ApplyObserver observer;
  observer.applied = [this](const engine::ApplyOutcome& o) { applied(o); };
  observer.engine_failed = [this](const std::string& why) {
    refuse_reload(why);
  };
  loop_ = std::make_unique<ApplyLoop>(std::make_unique<engine::Engine>(config_),
                                      std::move(observer));
  // A reconcile comes after whatever the watcher saw before it: the
  // watcher's thread hands that over first, then queues the request.
  // Once that thread is gone (stopping), the request goes to the stopped
  // loop at once, which tells its client so.
  auto after_panel_changes = [this](std::function<void()> then) {
    std::unique_lock lock(hand_over_mutex_);
    if (hand_over_) {
      boost::asio::post(io_, [this, then = std::move(then)] {
        take_panel_changes();
        then();
      });
      return;
    }
    lock.unlock();
    then();
  };
  std::vector<boost::asio::io_context*> lanes;
  for (int i = 0; i < kControlThreads; ++i) {
    control_ios_.push_back(std::make_unique<boost::asio::io_context>(1));
    lanes.push_back(control_ios_.back().get());
  }
  // Before the applying thread starts: the socket's creation sets the
  // process's umask for a moment.
  server_ = std::make_unique<ControlServer>(
      std::move(lanes), config_.control_socket, config_.control_socket_group,
      make_commands(*loop_, info_, std::move(after_panel_changes)),
      control_limits(config_));
  // Watching starts before the first resync reads the tree, so nothing
  // saved meanwhile falls between the two.
  open_watcher();
}

Daemon::~Daemon() {
  stop_control_threads();
  loop_->stop();
  close_watcher();
}

int Daemon::run() {
  loop_->start();
  start_control_threads();
  wait_signal();
  schedule_resync();
  schedule_watchdog();
  schedule_delivery_poll();
  io_.run();
  // Stopping, in an order that lets every waiting request hear how it
  // ended, and soon. What is still queued is dropped, to be found again
  // by the next start's resync, and its requests hear that at once, as
  // do those that come from now on; the apply running now finishes (an
  // apply is never cut in half) and answers its own. Each reply is posted
  // to its connection's lane before the close is, so the lane writes it
  // first.
  loop_->begin_stop();
  end_hand_over();
  answer_running_relay_tests();
  loop_->stop();
  server_->close().wait_for(kCloseWait);
  stop_control_threads();
  spdlog::info(LogEvent("daemon.stopped").str());
  return 0;
}

void Daemon::start_control_threads() {
  for (auto& io : control_ios_) {
    control_work_.emplace_back(io->get_executor());
    control_threads_.emplace_back([io = io.get()] { io->run(); });
  }
}

// Reconciles handed to the watcher's thread while the loop stopped reach
// it now, and hear at once that it stopped; later ones go there directly.
void Daemon::end_hand_over() {
  {
    std::lock_guard lock(hand_over_mutex_);
    hand_over_ = false;
  }
  io_.restart();
  io_.poll();
}

// Connections are closed by now (run); replies still on their way are
// dropped with the io_context.
void Daemon::stop_control_threads() {
  control_work_.clear();
  for (auto& io : control_ios_) io->stop();
  for (auto& t : control_threads_) t.join();
  control_threads_.clear();
}

void Daemon::wait_signal() {
  signals_.async_wait([this](boost::system::error_code ec, int signo) {
    if (ec) return;
    if (signo == SIGHUP) {
      reload();
      wait_signal();
    } else {
      stop(signo == SIGTERM ? "SIGTERM" : "SIGINT");
    }
  });
}

// A configuration that cannot be loaded, or whose Engine cannot be made,
// leaves the running one in force; status shows why.
void Daemon::refuse_reload(const std::string& why) {
  spdlog::error(LogEvent("config.reload_failed")
                    .add("error", why)
                    .add("kept", "the running configuration")
                    .str());
  info_.record_reload(why);
}

void Daemon::stop(const char* why) {
  spdlog::info(LogEvent("daemon.stop").add("reason", why).str());
  notifier_.stopping();
  boost::system::error_code ignored;
  signals_.cancel(ignored);
  resync_timer_.cancel();
  watchdog_timer_.cancel();
  delivery_timer_.cancel();
  close_watcher();
  io_.stop();
}

void Daemon::reload() {
  config::DaemonConfig fresh;
  try {
    fresh = config::load_daemon_config(config_file_);
  } catch (const std::exception& e) {
    refuse_reload(e.what());
    notifier_.status(
        "configuration reload failed, running with the old "
        "one: " +
        std::string(e.what()));
    return;
  }
  spdlog::info(
      LogEvent("config.reload").add("config", config_file_.string()).str());
  info_.record_reload("");
  notifier_.reloading();

  // Moving the socket would strand clients that found it where it was.
  if (fresh.control_socket != config_.control_socket) {
    spdlog::warn(LogEvent("config.restart_needed")
                     .add("key", "control_socket")
                     .add("kept", config_.control_socket.string())
                     .str());
    fresh.control_socket = config_.control_socket;
  }
  if (fresh.control_socket_group != config_.control_socket_group) {
    try {
      server_->set_group(fresh.control_socket_group);
    } catch (const std::exception& e) {
      spdlog::warn(LogEvent("control.group_failed")
                       .add("group", fresh.control_socket_group)
                       .add("error", e.what())
                       .add("kept", config_.control_socket_group)
                       .str());
      fresh.control_socket_group = config_.control_socket_group;
    }
  }
  server_->set_limits(control_limits(fresh));
  bool moved = fresh.panel_root != config_.panel_root;
  config_ = fresh;
  if (moved)
    open_watcher();
  else if (watcher_)
    watcher_->rescan();
  schedule_resync();
  // No READY=1 after STOPPING=1: a stop drops the resync (no outcome).
  loop_->reconfigure(config_, [this](const SharedOutcome& outcome) {
    if (outcome) notifier_.ready(current_status_line());
  });
}

void Daemon::open_watcher() {
  close_watcher();
  try {
    watcher_ = std::make_unique<PanelWatcher>(config_.panel_root);
  } catch (const std::exception& e) {
    // Without inotify the daemon still works from resyncs and reconcile
    // requests, only later.
    spdlog::warn(LogEvent("watch.failed")
                     .add("path", config_.panel_root.string())
                     .add("error", e.what())
                     .add("kept", "resync every interval")
                     .str());
    return;
  }
  rescan_watches();
  watch_stream_ = std::make_unique<boost::asio::posix::stream_descriptor>(
      io_, watcher_->fd());
  spdlog::debug(LogEvent("watch.start")
                    .add("path", config_.panel_root.string())
                    .add("dirs", watcher_->watch_count())
                    .str());
  wait_panel();
}

void Daemon::close_watcher() {
  if (watch_stream_) {
    boost::system::error_code ignored;
    watch_stream_->cancel(ignored);
    watch_stream_->release();  // the watcher owns the descriptor
    watch_stream_.reset();
  }
  watcher_.reset();
  rewatch_timer_.cancel();
  root_lost_ = false;
}

void Daemon::wait_panel() {
  watch_stream_->async_wait(
      boost::asio::posix::stream_descriptor::wait_read,
      [this, stream = watch_stream_.get()](boost::system::error_code ec) {
        if (ec || stream != watch_stream_.get())
          return;  // cancelled, or a newer watcher took over
        on_panel_readable();
      });
}

void Daemon::on_panel_readable() {
  if (take_panel_changes()) wait_panel();
}

// Hands the applying thread what the watcher has seen; false when the
// watcher failed and a new one took over (it waits on its own).
bool Daemon::take_panel_changes() {
  if (!watcher_) return false;
  // A reconcile right after the root is back need not wait for the timer.
  if (!watcher_->has_root()) rewatch();
  PanelChanges changes;
  try {
    changes = watcher_->read_changes();
  } catch (const std::exception& e) {
    spdlog::warn(LogEvent("watch.failed")
                     .add("error", e.what())
                     .add("kept", "a new watcher and a resync")
                     .str());
    open_watcher();
    resync("watch-failed");
    return false;
  }
  for (const auto& w : changes.warnings)
    spdlog::warn(LogEvent("watch.failed").add("error", w).str());
  // What a root said on its way out (rm -r's deletions) is not a change
  // of the panel's: the whole tree is read once a root is back.
  if (changes.root_gone) changes.paths.clear();
  if (!changes.paths.empty()) {
    spdlog::debug(
        LogEvent("watch.changes").add("paths", changes.paths.size()).str());
    loop_->note_paths({changes.paths.begin(), changes.paths.end()});
  }
  if (changes.overflow) {
    spdlog::warn(LogEvent("watch.overflow")
                     .add("kept", "a full resync reads everything")
                     .str());
    resync("overflow");
  } else if (changes.root_gone) {
    rewatch();  // often back already: a rename there and back, a swap
  }
  return true;
}

void Daemon::resync(const char* reason) {
  spdlog::debug(LogEvent("resync.start").add("reason", reason).str());
  if (watcher_) rescan_watches();
  loop_->resync(nullptr);
}

// Watches what exists of the tree, and says when its root was lost or is
// back: once each, however often it is looked for in between. True while
// the root is watched.
bool Daemon::rescan_watches() {
  for (const auto& w : watcher_->rescan())
    spdlog::warn(LogEvent("watch.failed").add("error", w).str());
  bool watched = watcher_->has_root();
  if (watched != root_lost_) return watched;  // as it was
  root_lost_ = !watched;
  if (watched) {
    rewatch_timer_.cancel();
    auto lost = std::chrono::steady_clock::now() - root_lost_at_;
    spdlog::info(
        LogEvent("watch.root_back")
            .add("path", config_.panel_root.string())
            .add("dirs", watcher_->watch_count())
            .add("after_ms",
                 std::chrono::duration_cast<std::chrono::milliseconds>(lost)
                     .count())
            .str());
  } else {
    root_lost_at_ = std::chrono::steady_clock::now();
    std::string kept = "the live configuration; looked for every " +
                       std::to_string(kRewatchInterval.count()) + " s";
    spdlog::warn(LogEvent("watch.root_lost")
                     .add("path", config_.panel_root.string())
                     .add("error", watcher_->root_error())
                     .add("kept", kept)
                     .str());
    schedule_rewatch();
  }
  return watched;
}

// Nothing reported what changed while the root was away (nor where it
// went): once it is back, a full resync reads it all.
void Daemon::rewatch() {
  if (!rescan_watches()) return;
  spdlog::debug(LogEvent("resync.start").add("reason", "root-back").str());
  loop_->resync(nullptr);
}

void Daemon::schedule_rewatch() {
  rewatch_timer_.expires_after(kRewatchInterval);
  rewatch_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || !watcher_ || !root_lost_) return;
    rewatch();
    if (root_lost_) schedule_rewatch();
  });
}

void Daemon::schedule_resync() {
  resync_timer_.expires_after(config_.resync_interval);
  resync_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    resync("interval");
    schedule_resync();
  });
}

void Daemon::schedule_watchdog() {
  auto interval = notifier_.watchdog_interval();
  if (!interval) return;
  watchdog_timer_.expires_after(*interval / 2);
  watchdog_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    auto busy = loop_->busy_since();
    if (!busy || std::chrono::steady_clock::now() - *busy < kStuckApply) {
      notifier_.watchdog();
    }
    schedule_watchdog();
  });
}

void Daemon::schedule_delivery_poll() {
  delivery_timer_.expires_after(kDeliveryPoll);
  delivery_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    loop_->run([](engine::Engine& engine) { engine.poll_deliveries(); });
    schedule_delivery_poll();
  });
}

// After every apply, before its waiters hear: the line needs only what
// the Engine's shared document has, so nothing is copied.
std::string Daemon::current_status_line() const {
  return status_line(*loop_->status_snapshot());
}

// On the applying thread, after each apply.
void Daemon::applied(const engine::ApplyOutcome& outcome) {
  outcome_log_.log(outcome);
  info_.record(outcome);
  std::string line = current_status_line();
  if (!ready_.exchange(true)) {
    spdlog::info(LogEvent("daemon.ready")
                     .add("generation", outcome.report.generation)
                     .add("result", outcome.result())
                     .str());
    notifier_.ready(line);
  } else {
    notifier_.status(line);
  }
}

}  // namespace havenoro::daemon
