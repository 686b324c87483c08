#include "engine_worker.h"

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>

#include "exim_fixture.h"
#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/engine/engine.h"
#include "havenoro_relay/model/relay_model.h"
#include "havenoro_relay/panel/panel_reader.h"
#include "panel_generator.h"

namespace havenoro::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Every entry below the output directory with what a write would change:
// its inode (a rename installs a new one), mtime and ctime.
using Snapshot = std::map<std::string, std::tuple<ino_t, long, long>>;

Snapshot snapshot(const fs::path& root) {
  Snapshot s;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    s[it->path().lexically_relative(root).string()] = {
        st.st_ino, st.st_mtim.tv_sec * 1000000000L + st.st_mtim.tv_nsec,
        st.st_ctim.tv_sec * 1000000000L + st.st_ctim.tv_nsec};
  }
  return s;
}

size_t differences(const Snapshot& a, const Snapshot& b) {
  size_t n = 0;
  for (const auto& [path, v] : a) {
    auto it = b.find(path);
    if (it == b.end() || it->second != v) ++n;
  }
  for (const auto& [path, v] : b) n += !a.count(path);
  return n;
}

size_t exim_starts(const fs::path& log) {
  std::ifstream in(log);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    n += line.find("daemon started: pid=") != std::string::npos;
  }
  return n;
}

json outcome_json(const engine::ApplyOutcome& o, double ms) {
  return {{"ms", ms},
          {"result", o.result()},
          {"written", o.report.written.size()},
          {"removed", o.report.removed.size()},
          {"new_generation", o.report.new_generation},
          {"reloaded", o.report.reloaded},
          {"problems", o.problems.size()},
          {"errors", o.report.errors}};
}

std::vector<GeneratedDomain> read_save_list(const fs::path& file) {
  std::vector<GeneratedDomain> list;
  for (const auto& d : json::parse(read_text(file))) {
    GeneratedDomain g;
    g.user = d.at("user");
    g.domain = d.at("domain");
    g.kind = DomainKind::kRelay;
    g.variant = d.at("variant");
    list.push_back(g);
  }
  return list;
}

json run_noops(engine::Engine& e, const WorkerTask& task) {
  const auto& out = e.config().output_dir;
  Snapshot before = snapshot(out);
  size_t starts = exim_starts(task.exim_main_log);
  json runs = json::array();
  for (int i = 0; i < task.noop_repeats; ++i) {
    auto t0 = Clock::now();
    auto o = e.resync();
    runs.push_back(outcome_json(o, ms_since(t0)));
  }
  return {{"runs", runs},
          {"entries_changed", differences(before, snapshot(out))},
          {"exim_restarts", exim_starts(task.exim_main_log) - starts}};
}

json run_saves(engine::Engine& e, const WorkerTask& task) {
  auto list = read_save_list(task.save_list);
  json runs = json::array();
  for (int i = 0; i < task.saves && !list.empty(); ++i) {
    const auto& d = list[i % list.size()];
    auto t0 = Clock::now();
    save_domain(e.config().panel_root, d, 1000 + i);
    e.note_path(domain_path(e.config().panel_root, d));
    auto o = e.apply_pending();
    runs.push_back(outcome_json(o, ms_since(t0)));
  }
  return runs;
}

}  // namespace

Memory memory_of(int pid) {
  Memory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long value = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    fields >> key >> value;
    if (key == "VmHWM:") m.peak_kib = value;
    if (key == "VmRSS:") m.rss_kib = value;
  }
  return m;
}

json run_worker(const WorkerTask& task) {
  auto config = config::load_daemon_config(task.relayd_config);
  json result;

  auto t0 = Clock::now();
  engine::Engine e(config);
  auto cold = e.resync();
  result["cold"] = outcome_json(cold, ms_since(t0));
  result["memory_after_cold_kib"] = memory_of(::getpid()).peak_kib;

  // The first two steps alone, now that the page cache is warm.
  panel::RelayRules rules{config.allow_private_relays};
  t0 = Clock::now();
  auto tree = panel::read_panel(config.panel_root, rules);
  result["read_panel_ms"] = ms_since(t0);
  t0 = Clock::now();
  auto model = model::build_relay_model(tree);
  result["build_model_ms"] = ms_since(t0);

  if (task.noop_repeats > 0) result["noop"] = run_noops(e, task);
  if (task.saves > 0) result["saves"] = run_saves(e, task);
  result["peak_rss_kib"] = memory_of(::getpid()).peak_kib;
  return result;
}

int worker_main(int argc, char** argv) {
  CLI::App app{"havenoro-bench worker (run by havenoro-bench itself)"};
  WorkerTask task;
  app.add_option("--config", task.relayd_config)->required();
  app.add_option("--main-log", task.exim_main_log)->required();
  app.add_option("--noop", task.noop_repeats);
  app.add_option("--save-list", task.save_list);
  app.add_option("--saves", task.saves);
  CLI11_PARSE(app, argc, argv);
  try {
    std::cout << run_worker(task).dump() << "\n";
  } catch (const std::exception& e) {
    std::cout << json{{"error", e.what()}}.dump() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace havenoro::bench
