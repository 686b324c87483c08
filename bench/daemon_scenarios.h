#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "child_process.h"
#include "exim_fixture.h"
#include "panel_generator.h"

namespace havenoro::bench {

/// The real havenoro-relayd, long-running, on the bench's panel tree and
/// private Exim; spoken to over its control socket as the panel does.
class Relayd {
 public:
  Relayd(const std::filesystem::path& binary,
         const std::filesystem::path& config,
         const std::filesystem::path& socket, const std::filesystem::path& log);

  /// Waits until the first apply has finished and nothing is queued;
  /// returns the status then. Throws std::runtime_error after `limit`.
  nlohmann::json wait_idle(std::chrono::seconds limit);
  /// Returns once everything queued so far has been applied (a reconcile
  /// of `domain` that waits), with the status then.
  nlohmann::json barrier(const std::string& domain);
  /// One status-get; throws when the daemon does not answer.
  nlohmann::json status() const;
  pid_t pid() const { return process_.pid(); }
  const std::filesystem::path& socket() const { return socket_; }
  void stop() { process_.stop(); }

 private:
  std::filesystem::path socket_;
  ChildProcess process_;
};

/// What the save-hook and burst scenarios need to know.
struct HookSetup {
  std::filesystem::path relayctl;
  std::filesystem::path panel_root;
  std::filesystem::path output_dir;
  const EximFixture* exim = nullptr;
  std::filesystem::path hook_log;  ///< where the burst's hooks write
};

/// One domain saved, then `havenoro-relayctl reconcile --domain D --wait`
/// as the panel's save hook runs it, `repeats` times on different relay
/// domains: the time from the rename to the hook's exit, and whether the
/// credential file then holds the new settings.
nlohmann::json run_save_hook(Relayd& d, const HookSetup& s,
                             const std::vector<const GeneratedDomain*>& relays,
                             int repeats);

/// `saves` domains saved within `span`, each followed by its save hook
/// (started without waiting for the previous one), while a prober
/// connects to Exim's port every `probe_every`: applies, Exim restarts,
/// refused connections, failed hooks.
nlohmann::json run_burst(Relayd& d, const HookSetup& s,
                         const std::vector<const GeneratedDomain*>& relays,
                         int saves, std::chrono::milliseconds span,
                         std::chrono::milliseconds probe_every);

/// `clients` threads asking status-get at the same moment, every
/// `interval`, for `duration`, while one domain after another is saved
/// and reconciled, `repeats` times; then the same once during a full
/// resync. Latencies in ms; the p99 of each run, and their summary.
nlohmann::json run_status_load(
    Relayd& d, const HookSetup& s,
    const std::vector<const GeneratedDomain*>& relays, int clients,
    std::chrono::milliseconds interval, std::chrono::milliseconds duration,
    int repeats);

/// Whether the live credential file of `d` is what revision `revision`
/// of its settings renders to (the save was applied).
bool credential_file_is(const std::filesystem::path& output_dir,
                        const GeneratedDomain& d, unsigned revision);

}  // namespace havenoro::bench
