#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/daemon/apply_loop.h"
#include "havenoro_relay/daemon/control_server.h"
#include "havenoro_relay/daemon/daemon_info.h"
#include "havenoro_relay/daemon/daemon_log.h"
#include "havenoro_relay/daemon/panel_watcher.h"
#include "havenoro_relay/daemon/systemd_notifier.h"

namespace havenoro::daemon {

/// The long-running daemon: watches the panel tree, applies what changes
/// on one applying thread, answers the control socket, resyncs the whole
/// tree at start and every resync_interval, re-reads its configuration on
/// SIGHUP and stops cleanly on SIGTERM or SIGINT. The watcher, signals and
/// timers run on one thread; the control socket on two of its own, so that
/// status requests keep their pace whatever else the daemon does.
class Daemon {
 public:
  /// Opens the control socket and starts watching; nothing is applied
  /// yet. Throws std::system_error when the socket or inotify cannot be
  /// set up.
  Daemon(std::filesystem::path config_file, config::DaemonConfig config);
  ~Daemon();

  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Runs until SIGTERM or SIGINT; the apply running then is finished,
  /// every request still waiting answered, the socket removed. Returns
  /// the exit status.
  int run();

 private:
  void start_control_threads();
  void stop_control_threads();
  void end_hand_over();
  void wait_signal();
  void reload();
  void refuse_reload(const std::string& why);
  void stop(const char* why);
  void open_watcher();
  void close_watcher();
  void wait_panel();
  void on_panel_readable();
  bool take_panel_changes();
  void resync(const char* reason);
  void schedule_resync();
  void schedule_watchdog();
  void schedule_delivery_poll();
  void applied(const engine::ApplyOutcome& outcome);
  std::string current_status_line() const;

  std::filesystem::path config_file_;
  config::DaemonConfig config_;

  boost::asio::io_context io_;
  std::vector<std::unique_ptr<boost::asio::io_context>> control_ios_;
  std::vector<
      boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      control_work_;
  std::vector<std::thread> control_threads_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer resync_timer_;
  boost::asio::steady_timer watchdog_timer_;
  boost::asio::steady_timer delivery_timer_;

  SystemdNotifier notifier_;
  DaemonInfo info_;
  OutcomeLog outcome_log_;
  std::atomic<bool> ready_{false};

  std::unique_ptr<ApplyLoop> loop_;
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<PanelWatcher> watcher_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> watch_stream_;

  // Whether reconciles still go through the watcher's thread (io_), which
  // no longer runs once stopping.
  std::mutex hand_over_mutex_;
  bool hand_over_ = true;

  // The panel root's watch, lost and looked for again (watcher's thread).
  bool rescan_watches();
  void rewatch();
  void schedule_rewatch();
  boost::asio::steady_timer rewatch_timer_{io_};
  bool root_lost_ = false;
  std::chrono::steady_clock::time_point root_lost_at_;
};

/// The control socket's limits as a configuration sets them.
ControlLimits control_limits(const config::DaemonConfig& config);

}  // namespace havenoro::daemon
