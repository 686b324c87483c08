#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace havenoro::bench {

/// What a worker process is asked to do with the Engine, in-process.
struct WorkerTask {
  std::filesystem::path relayd_config;  ///< havenoro-relayd's JSON config
  std::filesystem::path exim_main_log;  ///< to count Exim's restarts
  int noop_repeats = 0;                 ///< no-op resyncs after the cold one
  /// Domains to save one at a time after the cold apply (a JSON file of
  /// GeneratedDomain objects), and how many saves.
  std::filesystem::path save_list;
  int saves = 0;
};

/// Runs a task in this process and returns what it measured: a cold
/// resync of an empty output directory, then the no-op resyncs (with the
/// files and Exim restarts they caused, counted independently of the
/// Engine's own report), then single-domain saves through note_path() and
/// apply_pending(). Peak RSS is this process's VmHWM.
nlohmann::json run_worker(const WorkerTask& task);

/// Parses the worker's command line (after "worker") and prints the
/// result as one JSON line; the exit status for main().
int worker_main(int argc, char** argv);

/// This process's peak and current resident set, in KiB (VmHWM, VmRSS of
/// /proc/<pid>/status); 0 when unknown.
struct Memory {
  long peak_kib = 0;
  long rss_kib = 0;
};
Memory memory_of(int pid);

}  // namespace havenoro::bench
