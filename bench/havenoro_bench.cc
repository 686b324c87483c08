// havenoro-bench: how havenoro-relayd behaves on a busy hosting server
// (docs/benchmarks.md). Generates panel trees of N domains, runs each
// scenario against a real Exim and prints a table of figures, with a JSON
// file of everything measured. Times are given as ratios to a floor
// measured in the same run: one bare `exim -C <small config> -bV`.
//
//   sudo build/bench/havenoro-bench [--quick] [--json FILE]

#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "daemon_scenarios.h"
#include "engine_worker.h"
#include "exim_fixture.h"
#include "machine.h"
#include "panel_generator.h"
#include "report.h"
#include "router_layout.h"
#include "stats.h"

namespace havenoro::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

struct Options {
  bool quick = false;
  std::vector<size_t> sizes;
  fs::path json_out = "havenoro-bench.json";
  fs::path workdir_parent = "/var/tmp";
  bool keep = false;
  fs::path relayd = HAVENORO_BENCH_RELAYD;
  fs::path relayctl = HAVENORO_BENCH_RELAYCTL;
  fs::path exim = "/usr/sbin/exim4";
  fs::path source = HAVENORO_BENCH_SOURCE_DIR;
  std::set<std::string> only;
  uint64_t seed = 1;
  bool no_fail = false;
};

const std::set<std::string> kScenarios = {"cold", "exim-cost", "daemon",
                                          "memory-100k"};

std::string ms_text(double ms) {
  if (ms >= 10000) return fmt::format("{:.1f} s", ms / 1000);
  if (ms >= 100) return fmt::format("{:.0f} ms", ms);
  if (ms >= 10) return fmt::format("{:.1f} ms", ms);
  return fmt::format("{:.2f} ms", ms);
}

// "median [min-max] (n=R)": the figure and its spread.
std::string spread_text(const json& s) {
  return fmt::format("{} [{}-{}] n={}", ms_text(s["median"]), ms_text(s["min"]),
                     ms_text(s["max"]), s["n"].get<int>());
}

std::string count_text(size_t n) {
  std::string s = std::to_string(n);
  for (int at = static_cast<int>(s.size()) - 3; at > 0; at -= 3) {
    s.insert(at, ",");
  }
  return s;
}

double median_of(const std::vector<double>& v) {
  return summarize(v).median;
}

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}
  int run();

 private:
  bool wanted(const std::string& s) const {
    return o_.only.empty() || o_.only.count(s);
  }
  int repeats(size_t n) const;
  size_t daemon_size() const;

  void setup();
  void measure_floor(const char* when, int runs);
  double floor_ms() const { return median_of(floor_); }
  void generate_trees();
  fs::path write_relayd_config(const std::string& name, const fs::path& panel,
                               const fs::path& out, const fs::path& exim_conf,
                               bool reload);
  void fresh_output(const fs::path& out);
  json worker(const std::vector<std::string>& args, milliseconds limit);
  void save_list(const fs::path& file,
                 const std::vector<const GeneratedDomain*>& domains);

  void cold_scenarios();
  void cold_rows(const std::map<size_t, std::vector<double>>& cold);
  void noop_rows(size_t n, const json& w, double cold_ms);
  void exim_cost();
  void exim_cost_rows(const std::map<std::string, std::vector<double>>& t);
  void daemon_scenarios();
  void daemon_rows(const json& d);
  void memory_100k();
  void finish();

  Options o_;
  fs::path work_;
  fs::path out_;        // the output directory the Exim daemon reads
  fs::path live_conf_;  // Exim's configuration with out_ included
  fs::path floor_conf_;
  std::unique_ptr<EximFixture> exim_;
  std::vector<double> floor_;
  std::map<size_t, GeneratedPanel> panels_;
  int trash_ = 0;
  // Sizes whose cold apply did not finish: a larger tree, or the daemon
  // on the same tree, would only hang the same way.
  std::set<size_t> hung_;
  bool hung_at_or_below(size_t n) const {
    return std::any_of(hung_.begin(), hung_.end(),
                       [n](size_t h) { return h <= n; });
  }
  json results_ = json::object();
  Report report_;
  Clock::time_point started_ = Clock::now();
};

int Bench::repeats(size_t n) const {
  if (o_.quick) return n >= 10000 ? 2 : 3;
  return n >= 100000 ? 2 : 5;
}

// The daemon scenarios run on the 10,000-domain tree (or the largest
// smaller one when fewer sizes were asked for, or when the cold apply of
// 10,000 did not finish: the daemon's first apply would not either).
size_t Bench::daemon_size() const {
  size_t best = 0;
  for (size_t n : o_.sizes) {
    if (n <= 10000 && !hung_at_or_below(n)) best = std::max(best, n);
  }
  return best;
}

void Bench::setup() {
  fs::create_directories(o_.workdir_parent);
  std::string tmpl = (o_.workdir_parent / "havenoro-bench-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    throw std::runtime_error("cannot create a directory in " +
                             o_.workdir_parent.string());
  }
  work_ = tmpl;
  fs::permissions(work_, fs::perms(0755));
  out_ = work_ / "out";
  exim_ = std::make_unique<EximFixture>(
      EximSetup{o_.exim, o_.source / "exim-templates/exim4.conf.example",
                work_ / "exim"});
  live_conf_ = work_ / "exim.conf";
  floor_conf_ = work_ / "floor.conf";
  exim_->write_config(live_conf_, out_);
  exim_->write_config(floor_conf_, work_ / "no-output");
  results_["machine"] = describe_machine(work_, o_.exim, floor_conf_);
  exim_->start(live_conf_);
  std::cerr << "havenoro-bench: working in " << work_.string() << "; Exim on "
            << exim_->probe_address() << "\n";
}

void Bench::measure_floor(const char* when, int runs) {
  std::vector<double> mine;
  for (int i = 0; i < runs; ++i) {
    auto r = run_timed({o_.exim.string(), "-C", floor_conf_.string(), "-bV"},
                       seconds(10));
    if (r.exit_code != 0) throw std::runtime_error("exim -bV failed");
    mine.push_back(r.ms);
  }
  floor_.insert(floor_.end(), mine.begin(), mine.end());
  results_["floor"][when] = summarize(mine).to_json();
}

void Bench::generate_trees() {
  json gen = json::object();
  for (size_t n : o_.sizes) {
    auto t0 = Clock::now();
    PanelSpec spec{n, o_.seed, {}};
    panels_[n] = generate_panel(work_ / fmt::format("panel-{}", n), spec);
    const auto& p = panels_[n];
    gen[std::to_string(n)] = {
        {"users", p.users.size()},
        {"suspended_users", p.suspended_users},
        {"relay", p.count(DomainKind::kRelay)},
        {"no_relay", p.count(DomainKind::kNoRelay)},
        {"suspended", p.count(DomainKind::kSuspended)},
        {"user_suspended", p.count(DomainKind::kUserSuspended)},
        {"broken", p.count(DomainKind::kBroken)},
        {"ms",
         std::chrono::duration<double, std::milli>(Clock::now() - t0).count()}};
    std::cerr << "havenoro-bench: panel of " << n
              << " domains: " << gen[std::to_string(n)].dump() << "\n";
  }
  results_["panels"] = gen;
}

fs::path Bench::write_relayd_config(const std::string& name,
                                    const fs::path& panel, const fs::path& out,
                                    const fs::path& exim_conf, bool reload) {
  json c = {{"panel_root", panel.string()},
            {"output_dir", out.string()},
            {"templates_dir", (o_.source / "exim-templates").string()},
            {"exim_binary", o_.exim.string()},
            {"exim_config", exim_conf.string()},
            // Without a running Exim behind the pid file, nothing is reloaded.
            {"exim_pid_file", reload ? exim_->pid_file().string()
                                     : (work_ / "no-exim.pid").string()},
            {"exim_main_log", exim_->main_log().string()},
            {"exim_probe_address", exim_->probe_address()},
            {"control_socket", (work_ / "control.sock").string()},
            {"resync_interval_s", 86400}};
  fs::path file = work_ / (name + ".json");
  write_text(file, c.dump(2) + "\n", 0600);
  return file;
}

// A cold apply starts from an empty output directory; the old one is set
// aside (removing 100,000 files would take longer than the apply) and
// removed when the run ends.
void Bench::fresh_output(const fs::path& out) {
  if (!fs::exists(out)) return;
  fs::create_directories(work_ / "trash");
  fs::rename(out, work_ / "trash" / std::to_string(++trash_));
}

json Bench::worker(const std::vector<std::string>& args, milliseconds limit) {
  std::vector<std::string> argv = {fs::read_symlink("/proc/self/exe").string(),
                                   "worker"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto run = run_timed(argv, limit, true);
  if (run.timed_out) {
    return {{"error", fmt::format("did not finish in {} s (killed)",
                                  limit.count() / 1000)},
            {"timed_out", true}};
  }
  auto last = run.out.find_last_of('{') == std::string::npos
                  ? std::string::npos
                  : run.out.rfind("\n{");
  std::string line = run.out.substr(last == std::string::npos ? 0 : last + 1);
  try {
    return json::parse(line);
  } catch (const std::exception&) {
    return {{"error", "worker printed no result: " + run.out.substr(0, 300)}};
  }
}

void Bench::save_list(const fs::path& file,
                      const std::vector<const GeneratedDomain*>& domains) {
  json list = json::array();
  for (const auto* d : domains) {
    list.push_back(
        {{"user", d->user}, {"domain", d->domain}, {"variant", d->variant}});
  }
  write_text(file, list.dump(), 0600);
}

void Bench::cold_scenarios() {
  std::map<size_t, std::vector<double>> cold;
  json all = json::object();
  size_t noop_n = daemon_size();
  for (size_t n : o_.sizes) {
    auto conf = write_relayd_config(fmt::format("relayd-{}", n),
                                    panels_[n].root, out_, live_conf_, true);
    auto relays = panels_[n].relays();
    relays.resize(std::min<size_t>(relays.size(), 20));
    save_list(work_ / "engine-saves.json", relays);
    json runs = json::array();
    milliseconds limit(60000 + static_cast<long>(n) * 3);
    if (hung_at_or_below(n)) {
      report_.failed(fmt::format("cold apply {}", count_text(n)),
                     fmt::format("not run: the cold apply of {} domains "
                                 "did not finish",
                                 count_text(*hung_.begin())));
      continue;
    }
    for (int r = 0; r < repeats(n); ++r) {
      fresh_output(out_);
      std::vector<std::string> args = {"--config", conf.string(), "--main-log",
                                       exim_->main_log().string()};
      bool last = r == repeats(n) - 1;
      if (last && n == noop_n) {
        args.insert(args.end(), {"--noop", o_.quick ? "3" : "5", "--save-list",
                                 (work_ / "engine-saves.json").string(),
                                 "--saves", o_.quick ? "8" : "20"});
      }
      std::cerr << "havenoro-bench: cold apply of " << n << " domains, run "
                << r + 1 << "\n";
      json w = worker(args, limit);
      runs.push_back(w);
      if (w.value("timed_out", false)) hung_.insert(n);
      if (w.contains("error")) break;  // a hang would only repeat itself
      if (w["cold"]["result"] == "failed") break;
      cold[n].push_back(w["cold"]["ms"]);
      // Minutes per run: one is the figure, the run stays bounded.
      if (w["cold"]["ms"].get<double>() > 30000 && !last) {
        std::cerr << "havenoro-bench: one run of " << n
                  << " domains took over 30 s; not repeated\n";
        break;
      }
    }
    all[std::to_string(n)] = runs;
    if (runs.empty()) continue;
    const json& final = runs.back();
    if (final.contains("noop") && !cold[n].empty()) {
      noop_rows(n, final, median_of(cold[n]));
    }
    if (final.contains("saves")) {
      std::vector<double> ms;
      for (const auto& s : final["saves"]) ms.push_back(s["ms"]);
      json sum = summarize(ms).to_json();
      report_.add({"one-domain save",
                   fmt::format("Engine alone, {} domains", count_text(n)),
                   spread_text(sum), "", Verdict::kNone,
                   "note_path() + apply_pending() in-process: the save hook "
                   "figure without the daemon, socket and settle time"});
    }
    if (cold[n].empty()) {
      std::string why = final.value("error", "");
      if (why.empty() && final.contains("cold")) {
        why = final["cold"]["errors"].dump();
      }
      report_.failed(fmt::format("cold apply {}", count_text(n)), why);
    }
  }
  results_["cold"] = all;
  cold_rows(cold);
}

void Bench::cold_rows(const std::map<size_t, std::vector<double>>& cold) {
  for (const auto& [n, ms] : cold) {
    if (ms.empty()) continue;
    json s = summarize(ms).to_json();
    bool goal = n == 10000;
    report_.add(
        {"cold full apply", fmt::format("{} domains", count_text(n)),
         fmt::format("{} = {:.0f}x floor", spread_text(s),
                     s["median"].get<double>() / floor_ms()),
         goal ? "<= 2 s" : "",
         goal ? verdict(s["median"].get<double>() <= 2000) : Verdict::kNone,
         ""});
  }
  if (cold.count(1000) && cold.count(100000)) {
    double ratio = median_of(cold.at(100000)) / median_of(cold.at(1000));
    double exponent = std::log(ratio) / std::log(100.0);
    report_.add({"cold full apply", "growth 1,000 -> 100,000 (t ~ N^k)",
                 fmt::format("x{:.0f}, k = {:.2f}", ratio, exponent),
                 "close to linear: k <= 1.1", verdict(exponent <= 1.1), ""});
  }
}

void Bench::noop_rows(size_t n, const json& w, double cold_ms) {
  std::vector<double> ms;
  size_t written = 0;
  size_t reloaded = 0;
  for (const auto& r : w["noop"]["runs"]) {
    ms.push_back(r["ms"]);
    written += r["written"].get<size_t>() + r["removed"].get<size_t>();
    reloaded += r["reloaded"].get<bool>();
  }
  json s = summarize(ms).to_json();
  double share = s["median"].get<double>() / cold_ms * 100;
  std::string scenario = fmt::format("no-op apply {}", count_text(n));
  report_.add({scenario, "time, share of the cold apply",
               fmt::format("{} = {:.2f} %", spread_text(s), share), "<= 5 %",
               verdict(share <= 5), ""});
  size_t changed = w["noop"]["entries_changed"];
  report_.add({scenario, "files written or removed (report / on disk)",
               fmt::format("{} / {}", written, changed), "0",
               verdict(written == 0 && changed == 0), ""});
  size_t restarts = w["noop"]["exim_restarts"];
  report_.add({scenario, "Exim reloads (report / main log)",
               fmt::format("{} / {}", reloaded, restarts), "0",
               verdict(reloaded == 0 && restarts == 0), ""});
}

void Bench::exim_cost() {
  const size_t kSmall = 10;
  const size_t kLarge = o_.quick ? 2000 : 10000;
  std::map<std::string, std::vector<double>> times;
  json info = json::object();
  PanelMix relays_only{1.0, 0, 0, 0, true};
  std::map<size_t, std::string> sender;
  for (size_t n : {kSmall, kLarge}) {
    auto panel = generate_panel(work_ / fmt::format("panel-relay-{}", n),
                                {n, o_.seed, relays_only});
    auto relays = panel.relays();
    sender[n] = "postmaster@" + relays[relays.size() / 2]->domain;
    fs::path out = work_ / fmt::format("out-relay-{}", n);
    fs::path conf = work_ / fmt::format("exim-relay-{}.conf", n);
    exim_->write_config(conf, out);
    auto rc = write_relayd_config(fmt::format("relayd-relay-{}", n), panel.root,
                                  out, conf, false);
    json w = worker(
        {"--config", rc.string(), "--main-log", exim_->main_log().string()},
        milliseconds(60000));
    info[fmt::format("generic_{}", n)] = w;
    if (w.contains("error") || w["cold"]["result"] == "failed") {
      report_.failed("Exim cost per process",
                     fmt::format("applying {} relay domains: {}", n,
                                 w.value("error", w.dump().substr(0, 300))));
      return;
    }
    write_router_per_domain_config(
        floor_conf_, work_ / fmt::format("router-per-domain-{}.conf", n),
        relays);
  }
  auto argv = [&](const std::string& layout, size_t n, bool route) {
    fs::path conf = layout == "generic"
                        ? work_ / fmt::format("exim-relay-{}.conf", n)
                        : work_ / fmt::format("router-per-domain-{}.conf", n);
    std::vector<std::string> a = {o_.exim.string(), "-C", conf.string()};
    if (route) {
      a.insert(a.end(), {"-f", sender[n], "-bt", "someone@remote.example"});
    } else {
      a.push_back("-bV");
    }
    return a;
  };
  // What -bt says, once, so the JSON shows each layout really routes.
  for (const char* layout : {"generic", "per_domain"}) {
    auto r = run_timed(argv(layout, kLarge, true), seconds(30), true);
    info[fmt::format("{}_bt_output", layout)] = r.out;
  }
  int runs = o_.quick ? 10 : 20;
  for (int i = 0; i < runs; ++i) {
    for (const char* layout : {"generic", "per_domain"}) {
      for (bool route : {false, true}) {
        for (size_t n : {kSmall, kLarge}) {
          auto r = run_timed(argv(layout, n, route), seconds(60));
          times[fmt::format("{}/{}/{}", layout, route ? "bt" : "bV", n)]
              .push_back(r.ms);
        }
      }
    }
  }
  json sums = json::object();
  for (const auto& [k, v] : times) sums[k] = summarize(v).to_json();
  info["times"] = sums;
  info["sizes"] = {kSmall, kLarge};
  results_["exim_cost"] = info;
  exim_cost_rows(times);
}

void Bench::exim_cost_rows(
    const std::map<std::string, std::vector<double>>& t) {
  const auto& sizes = results_["exim_cost"]["sizes"];
  size_t small = sizes[0];
  size_t large = sizes[1];
  for (const char* mode : {"bV", "bt"}) {
    auto med = [&](const char* layout, size_t n) {
      return median_of(t.at(fmt::format("{}/{}/{}", layout, mode, n)));
    };
    double generic = med("generic", large) / med("generic", small);
    double per_domain = med("per_domain", large) / med("per_domain", small);
    report_.add({"Exim cost per process",
                 fmt::format("exim -{}, {} vs {} relay domains", mode,
                             count_text(large), small),
                 fmt::format("{} / {} = {:.2f}", ms_text(med("generic", large)),
                             ms_text(med("generic", small)), generic),
                 "<= 1.1", verdict(generic <= 1.1), ""});
    report_.add(
        {"Exim cost per process",
         fmt::format("  same, one router per domain (alternative)"),
         fmt::format("{} / {} = {:.2f}", ms_text(med("per_domain", large)),
                     ms_text(med("per_domain", small)), per_domain),
         "", Verdict::kNone, ""});
  }
}

void Bench::daemon_scenarios() {
  size_t n = daemon_size();
  if (!hung_.empty()) {
    report_.failed("daemon, 10,000 domains",
                   fmt::format("not run: its first apply is the cold apply "
                               "that did not finish; the daemon scenarios "
                               "below ran on {} domains",
                               count_text(n)));
  }
  if (n == 0 || !panels_.count(n)) return;
  const auto& panel = panels_[n];
  auto relays = panel.relays();
  // Different domains for each scenario: 40 for the save hook (half of
  // them on a small tree), the rest for the burst and the status load.
  size_t split = std::min<size_t>(40, relays.size() / 2);
  std::vector<const GeneratedDomain*> hook(relays.begin(),
                                           relays.begin() + split);
  std::vector<const GeneratedDomain*> burst(relays.begin() + split,
                                            relays.end());
  fresh_output(out_);
  auto conf = write_relayd_config(fmt::format("relayd-{}", n), panel.root, out_,
                                  live_conf_, true);
  json d = {{"domains", n}};
  Relayd relayd(o_.relayd, conf, work_ / "control.sock",
                work_ / fmt::format("relayd-{}.log", n));
  HookSetup setup{o_.relayctl, panel.root, out_, exim_.get(),
                  work_ / "burst-hooks.log"};
  try {
    auto t0 = Clock::now();
    auto first = relayd.wait_idle(seconds(240));
    d["first_apply"] = {
        {"wall_ms",
         std::chrono::duration<double, std::milli>(Clock::now() - t0).count()},
        {"last_apply", first["last_apply"]}};
    d["memory_after_first_apply_kib"] = memory_of(relayd.pid()).peak_kib;
    std::cerr << "havenoro-bench: save hook\n";
    d["save_hook"] = run_save_hook(relayd, setup, hook, o_.quick ? 10 : 20);
    std::cerr << "havenoro-bench: burst\n";
    d["burst"] = run_burst(relayd, setup, burst, o_.quick ? 200 : 500,
                           seconds(1), milliseconds(5));
    std::cerr << "havenoro-bench: status-get under load\n";
    d["status_load"] =
        run_status_load(relayd, setup, burst, 100, milliseconds(50),
                        o_.quick ? seconds(2) : seconds(4), o_.quick ? 1 : 3);
  } catch (const std::exception& e) {
    d["error"] = e.what();
  }
  d["memory"] = {{"peak_kib", memory_of(relayd.pid()).peak_kib},
                 {"rss_kib", memory_of(relayd.pid()).rss_kib}};
  relayd.stop();
  results_["daemon"] = d;
  daemon_rows(d);
}

void Bench::daemon_rows(const json& d) {
  std::string n = count_text(d["domains"]);
  if (d.contains("save_hook")) {
    const json& s = d["save_hook"];
    double ratio = s["ms"]["median"].get<double>() / floor_ms();
    report_.add({"one-domain save", fmt::format("save hook, {} domains", n),
                 fmt::format("{} = {:.1f}x floor", spread_text(s["ms"]), ratio),
                 "<= 3x floor", verdict(ratio <= 3), ""});
    int bad = s["failed"].get<int>() + s["unverified"].get<int>();
    report_.add({"one-domain save", "hooks failed or not live",
                 std::to_string(bad), "0", verdict(bad == 0), ""});
  }
  for (const char* part : {"burst", "status_load"}) {
    if (d.contains(part) && d[part].contains("error")) {
      report_.failed(part, d[part]["error"].get<std::string>());
    }
  }
  if (d.contains("burst") && !d["burst"].contains("error")) {
    const json& b = d["burst"];
    std::string scenario =
        fmt::format("burst of {} saves", b["saves"].get<int>());
    report_.add({scenario, "saves span / all hooks done",
                 fmt::format("{} / {}", ms_text(b["saves_span_ms"]),
                             ms_text(b["all_hooks_done_ms"])),
                 "", Verdict::kNone, ""});
    unsigned long applies = b["applies"];
    report_.add({scenario, "applies", std::to_string(applies), "one or a few",
                 verdict(applies <= 5), ""});
    size_t restarts = b["exim_restarts"];
    report_.add({scenario, "Exim reloads", std::to_string(restarts), "0",
                 verdict(restarts == 0), ""});
    long refused = b["probe"]["refused"];
    report_.add(
        {scenario,
         fmt::format("SMTP connections refused (probe every {} ms)",
                     b["probe"]["interval_ms"].get<int>()),
         fmt::format("{} of {}", refused, b["probe"]["attempts"].get<long>()),
         "0", verdict(refused == 0), ""});
    int bad = b["hooks_failed"].get<int>() + b["unverified"].get<int>();
    report_.add({scenario, "hooks failed or not live", std::to_string(bad), "0",
                 verdict(bad == 0), ""});
  }
  if (d.contains("status_load") && !d["status_load"].contains("error")) {
    const json& l = d["status_load"];
    const json& a = l["during_domain_applies"];
    const json& p99s = a["p99_ms"];
    double p99 = p99s["median"];
    long applies = 0;
    std::vector<double> p50s;
    for (const auto& run : a["runs"]) {
      applies += run["applies_meanwhile"].get<long>();
      p50s.push_back(run["latency_ms"]["median"]);
    }
    report_.add(
        {"status-get, 100 clients",
         fmt::format("p99 while domain applies run ({} applies)", applies),
         fmt::format("{} (p50 {})", spread_text(p99s),
                     ms_text(summarize(p50s).median)),
         "<= 5 ms", verdict(p99 <= 5), ""});
    const json& f = l["during_full_resync"];
    report_.add(
        {"status-get, 100 clients", "p99 during a full resync",
         fmt::format("{} (p50 {}, max {})", ms_text(f["latency_ms"]["p99"]),
                     ms_text(f["latency_ms"]["median"]),
                     ms_text(f["latency_ms"]["max"])),
         "", Verdict::kNone, ""});
  }
  double mib = d["memory"]["peak_kib"].get<double>() / 1024;
  bool goal = d["domains"] == 10000;
  report_.add({"daemon memory", fmt::format("peak RSS, {} domains", n),
               fmt::format("{:.1f} MiB", mib), goal ? "<= 32 MiB" : "",
               goal ? verdict(mib <= 32) : Verdict::kNone, ""});
  if (d.contains("error")) {
    report_.failed(fmt::format("daemon, {} domains", n),
                   d["error"].get<std::string>());
  }
}

void Bench::memory_100k() {
  if (!panels_.count(100000)) return;
  if (hung_at_or_below(100000)) {
    report_.failed("daemon memory 100,000",
                   "not run: its first apply is a cold apply, which did not "
                   "finish at a smaller size");
    return;
  }
  fresh_output(out_);
  auto conf = write_relayd_config("relayd-100000", panels_[100000].root, out_,
                                  live_conf_, true);
  Relayd relayd(o_.relayd, conf, work_ / "control.sock",
                work_ / "relayd-100000.log");
  json m;
  try {
    auto t0 = Clock::now();
    auto s = relayd.wait_idle(seconds(600));
    m["first_apply_wall_ms"] =
        std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    m["last_apply"] = s["last_apply"];
  } catch (const std::exception& e) {
    m["error"] = e.what();
  }
  auto mem = memory_of(relayd.pid());
  m["peak_kib"] = mem.peak_kib;
  m["rss_kib"] = mem.rss_kib;
  relayd.stop();
  results_["memory_100k"] = m;
  report_.add(
      {"daemon memory", "peak RSS, 100,000 domains",
       fmt::format("{:.1f} MiB", mem.peak_kib / 1024.0), "", Verdict::kNone,
       m.contains("error") ? "first apply: " + m["error"].get<std::string>()
                           : ""});
}

void Bench::finish() {
  exim_->stop();
  json floor = summarize(floor_).to_json();
  report_.add({"floor", "exim -C <small config> -bV, whole run",
               spread_text(floor), "", Verdict::kNone, ""});
  results_["floor"]["all"] = floor;
  results_["figures"] = report_.to_json();
  results_["quick"] = o_.quick;
  results_["total_s"] =
      std::chrono::duration<double>(Clock::now() - started_).count();
  results_["machine"]["load_average_1m_at_end"] = load_average();
  std::ofstream(o_.json_out) << results_.dump(2) << "\n";
  report_.print(std::cout, machine_line(results_["machine"]));
  std::cout << fmt::format("\nTotal {:.0f} s. Everything measured: {}\n",
                           results_["total_s"].get<double>(),
                           o_.json_out.string());
}

int Bench::run() {
  setup();
  measure_floor("start", o_.quick ? 15 : 30);
  generate_trees();
  if (wanted("cold")) cold_scenarios();
  if (wanted("exim-cost")) exim_cost();
  if (wanted("daemon")) daemon_scenarios();
  if (wanted("memory-100k")) memory_100k();
  measure_floor("end", o_.quick ? 15 : 30);
  finish();
  if (!o_.keep) {
    auto t0 = Clock::now();
    std::error_code ec;
    fs::remove_all(work_, ec);
    std::cerr << fmt::format(
        "havenoro-bench: removed {} in {:.0f} s\n", work_.string(),
        std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return report_.missed() == 0 || o_.no_fail ? 0 : 3;
}

}  // namespace
}  // namespace havenoro::bench

int main(int argc, char** argv) {
  using namespace havenoro::bench;
  if (argc > 1 && std::string(argv[1]) == "worker") {
    return worker_main(argc - 1, argv + 1);
  }
  CLI::App app{
      "havenoro-bench: havenoro-relayd on a busy hosting server, against a "
      "real Exim (docs/benchmarks.md)"};
  Options o;
  std::string only;
  app.add_flag("--quick", o.quick,
               "sizes up to 10,000, fewer repeats (a few minutes)");
  app.add_option("--sizes", o.sizes,
                 "panel sizes (default 10 1000 10000 "
                 "100000; --quick: up to 10000)")
      ->delimiter(',');
  app.add_option("--json", o.json_out, "where to write every figure as JSON");
  app.add_option("--workdir", o.workdir_parent,
                 "where the run's directory is made; put it on the file "
                 "system of /etc/exim4 to measure what a server sees");
  app.add_flag("--keep", o.keep, "keep the run's directory");
  app.add_option("--relayd", o.relayd, "havenoro-relayd binary");
  app.add_option("--relayctl", o.relayctl, "havenoro-relayctl binary");
  app.add_option("--exim", o.exim, "Exim binary");
  app.add_option("--source", o.source, "source tree (exim-templates/)");
  app.add_option("--seed", o.seed, "seed of the generated panel trees");
  app.add_flag("--no-fail", o.no_fail,
               "exit 0 even when a goal is missed (for a smoke run)");
  app.add_option("--only", only,
                 "comma-separated: cold, exim-cost, daemon, memory-100k");
  CLI11_PARSE(app, argc, argv);
  if (o.sizes.empty()) {
    o.sizes = o.quick ? std::vector<size_t>{10, 1000, 10000}
                      : std::vector<size_t>{10, 1000, 10000, 100000};
  }
  for (size_t at = 0; !only.empty() && at != std::string::npos;) {
    size_t comma = only.find(',', at);
    std::string s =
        only.substr(at, comma == std::string::npos ? comma : comma - at);
    if (!kScenarios.count(s)) {
      std::cerr << "havenoro-bench: unknown scenario '" << s << "'\n";
      return 64;
    }
    o.only.insert(s);
    at = comma == std::string::npos ? comma : comma + 1;
  }
  if (::geteuid() != 0) {
    std::cerr << "havenoro-bench: run as root (the daemon writes files owned "
                 "by Debian-exim and signals Exim)\n";
    return 64;
  }
  try {
    return Bench(o).run();
  } catch (const std::exception& e) {
    std::cerr << "havenoro-bench: " << e.what() << "\n";
    return 1;
  }
}
