#include "daemon_scenarios.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "engine_worker.h"
#include "havenoro_relay/ctl/control_client.h"
#include "havenoro_relay/panel/domain_settings.h"
#include "havenoro_relay/render/credential_file.h"
#include "havenoro_relay/util/fd.h"
#include "stats.h"

namespace havenoro::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

json call(const fs::path& socket, const std::string& command, json args,
          std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  ctl::ControlClient client(socket, limit);
  auto reply = client.call({command, std::move(args)});
  return reply.arguments;
}

std::vector<std::string> hook_argv(const HookSetup& s, const fs::path& socket,
                                   const std::string& domain) {
  return {s.relayctl.string(), "--socket", socket.string(), "reconcile",
          "--domain",          domain,     "--wait"};
}

// Connects to Exim's port every `every` and counts the refusals: the
// moments in which mail could not be handed to this server.
class Prober {
 public:
  Prober(int port, std::chrono::milliseconds every)
      : port_(port), every_(every), thread_([this] { run(); }) {}
  ~Prober() { stop(); }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  json result() const {
    return {{"attempts", attempts_.load()},
            {"refused", refused_.load()},
            {"other_failures", failed_.load()},
            {"interval_ms", every_.count()}};
  }

 private:
  void run() {
    auto next = Clock::now();
    while (!stop_) {
      probe();
      next += every_;
      std::this_thread::sleep_until(next);
    }
  }

  void probe() {
    util::UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ++attempts_;
    int rc =
        ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      pollfd p{s.get(), POLLOUT, 0};
      err = ETIMEDOUT;
      if (::poll(&p, 1, 200) == 1) {
        socklen_t len = sizeof err;
        ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    if (err == ECONNREFUSED) {
      ++refused_;
    } else if (err != 0) {
      ++failed_;
    }
  }

  int port_;
  std::chrono::milliseconds every_;
  std::atomic<bool> stop_{false};
  std::atomic<long> attempts_{0};
  std::atomic<long> refused_{0};
  std::atomic<long> failed_{0};
  std::thread thread_;
};

unsigned long applies_of(const json& status) {
  return status.value("applies", 0UL);
}

long last_apply_ms(const json& status) {
  const json& last = status.value("last_apply", json());
  return last.is_object() ? last.value("took_ms", -1L) : -1L;
}

// The first `limit` different lines of a log, with how often each came.
json distinct_lines(const fs::path& log, size_t limit) {
  std::map<std::string, int> seen;
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) ++seen[line];
  json out = json::array();
  for (const auto& [text, count] : seen) {
    if (out.size() == limit) break;
    out.push_back({{"line", text}, {"count", count}});
  }
  return out;
}

// One request on a fresh connection, as havenoro-relayctl makes it, but
// without parsing the reply: the client's own work stays small, so what
// is measured is the daemon. Returns false when it did not answer.
bool raw_status_get(const fs::path& socket, std::chrono::milliseconds limit) {
  util::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr)) {
    return false;
  }
  static const char kRequest[] = "{\"command\":\"status-get\"}\n";
  if (::write(fd.get(), kRequest, sizeof kRequest - 1) !=
      static_cast<ssize_t>(sizeof kRequest - 1)) {
    return false;
  }
  auto deadline = Clock::now() + limit;
  char buf[16384];
  while (Clock::now() < deadline) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return false;
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) return false;
    if (std::memchr(buf, '\n', n)) return true;
  }
  return false;
}

}  // namespace

bool credential_file_is(const fs::path& output_dir, const GeneratedDomain& d,
                        unsigned revision) {
  auto parsed = panel::parse_domain_settings(domain_file_text(d, revision),
                                             d.domain, panel::RelayRules{});
  if (!parsed.value || !parsed.value->relay) return false;
  std::ifstream in(output_dir / "domains" / d.domain / "smtp_relay.conf");
  std::stringstream live;
  live << in.rdbuf();
  return live.str() ==
         render::render_credential_file(d.domain, *parsed.value->relay);
}

Relayd::Relayd(const fs::path& binary, const fs::path& config,
               const fs::path& socket, const fs::path& log)
    : socket_(socket),
      process_({binary.string(), "--config", config.string()}, log) {}

json Relayd::status() const {
  return call(socket_, "status-get", {});
}

json Relayd::barrier(const std::string& domain) {
  // A reconcile that waits is answered by the apply that took it, and an
  // apply takes everything queued before it: once it answers, every save
  // noted earlier has been applied.
  call(socket_, "reconcile", {{"domain", domain}, {"wait", true}},
       std::chrono::seconds(120));
  return status();
}

json Relayd::wait_idle(std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  int quiet = 0;
  while (Clock::now() < deadline) {
    if (!process_.running()) throw std::runtime_error("havenoro-relayd exited");
    try {
      auto s = status();
      bool idle =
          !s.value("last_apply", json()).is_null() && s.value("queued", 1) == 0;
      // Idle twice in a row, 100 ms apart: no apply was just starting.
      if (idle && ++quiet >= 3) return s;
      if (!idle) quiet = 0;
    } catch (const std::exception&) {
      quiet = 0;  // the socket is not there yet
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw std::runtime_error("havenoro-relayd did not finish its apply in " +
                           std::to_string(limit.count()) + " s");
}

json run_save_hook(Relayd& d, const HookSetup& s,
                   const std::vector<const GeneratedDomain*>& relays,
                   int repeats) {
  json runs = json::array();
  std::vector<double> ms;
  int failed = 0;
  int unverified = 0;
  for (int i = 0; i < repeats && i < static_cast<int>(relays.size()); ++i) {
    const auto& dom = *relays[i];
    unsigned revision = 100 + i;
    auto before = applies_of(d.status());
    auto t0 = Clock::now();
    save_domain(s.panel_root, dom, revision);
    auto hook = run_timed(hook_argv(s, d.socket(), dom.domain),
                          std::chrono::seconds(60));
    double took = ms_between(t0, Clock::now());
    bool live = credential_file_is(s.output_dir, dom, revision);
    failed += hook.exit_code != 0;
    unverified += !live;
    auto status = d.status();
    ms.push_back(took);
    runs.push_back({{"domain", dom.domain},
                    {"ms", took},
                    {"hook_ms", hook.ms},
                    {"exit", hook.exit_code},
                    {"live", live},
                    {"applies", applies_of(status) - before},
                    {"apply_took_ms", last_apply_ms(status)}});
    // Let the daemon go idle, so each save starts from the same state.
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  return {{"ms", summarize(ms).to_json()},
          {"failed", failed},
          {"unverified", unverified},
          {"runs", runs}};
}

json run_burst(Relayd& d, const HookSetup& s,
               const std::vector<const GeneratedDomain*>& relays, int saves,
               std::chrono::milliseconds span,
               std::chrono::milliseconds probe_every) {
  saves = std::min<int>(saves, relays.size());
  if (saves == 0) return {{"error", "no relay domains left for a burst"}};
  auto status0 = d.wait_idle(std::chrono::seconds(60));
  size_t starts0 = s.exim->starts();
  long peak0 = memory_of(d.pid()).peak_kib;
  unsigned revision = 500;

  Prober prober(s.exim->port(), probe_every);
  std::vector<pid_t> hooks;
  auto t0 = Clock::now();
  for (int i = 0; i < saves; ++i) {
    std::this_thread::sleep_until(t0 + span * i / saves);
    save_domain(s.panel_root, *relays[i], revision);
    hooks.push_back(
        spawn_async(hook_argv(s, d.socket(), relays[i]->domain), s.hook_log));
  }
  auto saved = Clock::now();
  auto deadline = saved + std::chrono::seconds(180);
  std::vector<int> exits;
  for (pid_t pid : hooks) exits.push_back(collect(pid, deadline));
  auto done = Clock::now();
  // Applies still running are counted once they are done: the counter
  // stays put for a second, then a barrier makes sure nothing is left.
  auto status1 = d.status();
  for (int i = 0; i < 120; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto now = d.status();
    bool same = applies_of(now) == applies_of(status1);
    status1 = now;
    if (same && now.value("queued", 1) == 0) break;
  }
  auto after = d.barrier(relays[saves - 1]->domain);
  const json& last = after.value("last_apply", json());
  bool barrier_wrote = applies_of(after) > applies_of(status1) &&
                       last.is_object() && last.value("written", 0) > 0;
  if (barrier_wrote) status1 = after;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  prober.stop();

  int failed = 0;
  int unverified = 0;
  std::map<int, int> by_exit;
  for (int i = 0; i < saves; ++i) {
    failed += exits[i] != 0;
    ++by_exit[exits[i]];
    unverified += !credential_file_is(s.output_dir, *relays[i], revision);
  }
  json exit_codes = json::object();
  for (auto [code, count] : by_exit) exit_codes[std::to_string(code)] = count;
  return {{"saves", saves},
          {"saves_span_ms", ms_between(t0, saved)},
          {"all_hooks_done_ms", ms_between(t0, done)},
          {"applies", applies_of(status1) - applies_of(status0)},
          {"exim_restarts", s.exim->starts() - starts0},
          {"generation_before", status0.value("generation", 0UL)},
          {"generation_after", status1.value("generation", 0UL)},
          {"daemon_peak_kib_before", peak0},
          {"daemon_peak_kib_after", memory_of(d.pid()).peak_kib},
          {"hooks_failed", failed},
          {"hook_exit_codes", exit_codes},
          {"hook_messages", distinct_lines(s.hook_log, 5)},
          {"unverified", unverified},
          {"probe", prober.result()}};
}

namespace {

// Clients that ask status-get all at once, every interval; latencies in
// ms, one per request, from connect to the reply's last byte.
struct StatusLoad {
  std::vector<double> latencies;
  long failures = 0;
};

StatusLoad status_rounds(const fs::path& socket, int clients,
                         std::chrono::milliseconds interval,
                         std::chrono::milliseconds duration) {
  StatusLoad load;
  std::mutex mutex;
  auto start = Clock::now() + std::chrono::milliseconds(50);
  long rounds = duration / interval;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      std::vector<double> mine;
      long failures = 0;
      for (long r = 0; r < rounds; ++r) {
        std::this_thread::sleep_until(start + interval * r);
        auto t0 = Clock::now();
        if (raw_status_get(socket, std::chrono::seconds(5))) {
          mine.push_back(ms_between(t0, Clock::now()));
        } else {
          ++failures;
        }
      }
      std::lock_guard lock(mutex);
      load.latencies.insert(load.latencies.end(), mine.begin(), mine.end());
      load.failures += failures;
    });
  }
  for (auto& t : threads) t.join();
  return load;
}

json load_json(const StatusLoad& l, unsigned long applies) {
  return {{"latency_ms", summarize(l.latencies).to_json()},
          {"failures", l.failures},
          {"applies_meanwhile", applies}};
}

}  // namespace

// One run of status rounds while one save after another is reconciled,
// so that applies run throughout.
json status_during_saves(Relayd& d, const HookSetup& s,
                         const std::vector<const GeneratedDomain*>& relays,
                         int clients, std::chrono::milliseconds interval,
                         std::chrono::milliseconds duration,
                         unsigned revision) {
  auto before = applies_of(d.status());
  std::atomic<bool> stop{false};
  std::thread saver([&] {
    for (size_t i = 0; !stop; ++i) {
      const auto& dom = *relays[i % relays.size()];
      save_domain(s.panel_root, dom, revision + i);
      try {
        call(d.socket(), "reconcile", {{"domain", dom.domain}});
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(60));
    }
  });
  auto load = status_rounds(d.socket(), clients, interval, duration);
  stop = true;
  saver.join();
  return load_json(load,
                   applies_of(d.barrier(relays.front()->domain)) - before);
}

json run_status_load(Relayd& d, const HookSetup& s,
                     const std::vector<const GeneratedDomain*>& relays,
                     int clients, std::chrono::milliseconds interval,
                     std::chrono::milliseconds duration, int repeats) {
  if (relays.empty()) return {{"error", "no relay domains to save"}};
  d.wait_idle(std::chrono::seconds(60));
  json result;

  // 1. Saves throughout, `repeats` runs: one run's p99 rests on its few
  // slowest rounds, so it is the runs' median that is compared.
  json runs = json::array();
  std::vector<double> p99s;
  for (int r = 0; r < repeats; ++r) {
    runs.push_back(status_during_saves(d, s, relays, clients, interval,
                                       duration, 900 + 1000 * r));
    p99s.push_back(runs.back()["latency_ms"]["p99"]);
  }
  result["during_domain_applies"] = {{"runs", runs},
                                     {"p99_ms", summarize(p99s).to_json()}};

  // 2. A full resync of the whole tree, the hourly safety net.
  auto before = applies_of(d.status());
  call(d.socket(), "reconcile", json::object());
  auto load =
      status_rounds(d.socket(), clients, interval,
                    std::max(duration / 2, std::chrono::milliseconds(500)));
  result["during_full_resync"] =
      load_json(load, applies_of(d.barrier(relays.front()->domain)) - before);
  result["clients"] = clients;
  result["interval_ms"] = interval.count();
  return result;
}

}  // namespace havenoro::bench
