#include "havenoro_relay/daemon/apply_loop.h"

#if __has_include(<malloc.h>)
#include <malloc.h>
#endif
#include <spdlog/spdlog.h>

#include <string_view>

#include "havenoro_relay/daemon/log_event.h"

namespace havenoro::daemon {
namespace {

using SteadyClock = std::chrono::steady_clock;

// After an apply of this many domains (or a full one) the memory it freed
// is given back to the system.
constexpr size_t kLargeApply = 100;

// The domain a queued change is about, near enough to tell one domain's
// save (".d.example.json.tmp" written, renamed to "d.example.json", then
// the save hook's "d.example") from a bulk edit of several. Other paths
// (a user's directory, user.json) count by their name.
std::string_view change_key(const std::filesystem::path& path) {
  std::string_view p = path.native();
  std::string_view name = p.substr(p.rfind('/') + 1);
  std::string_view dir = p.substr(0, p.size() - name.size());
  if (dir.ends_with("/conf/")) return "";  // the server-wide relay
  if (name.starts_with('.')) name.remove_prefix(1);
  if (name.ends_with(".tmp")) name.remove_suffix(4);
  for (std::string_view suffix : {".json", ".dkim.pem"}) {
    if (name.ends_with(suffix)) {
      name.remove_suffix(suffix.size());
      break;
    }
  }
  return name;
}

// The domain whose own file (settings or key, not a temporary) a path
// below a user's mail directory is.
std::optional<std::string_view> saved_domain(
    const std::filesystem::path& path) {
  std::string_view p = path.native();
  std::string_view name = p.substr(p.rfind('/') + 1);
  std::string_view dir = p.substr(0, p.size() - name.size());
  if (name.starts_with('.') || !dir.ends_with("/mail/")) return std::nullopt;
  for (std::string_view suffix : {".json", ".dkim.pem"}) {
    if (name.size() > suffix.size() && name.ends_with(suffix))
      return name.substr(0, name.size() - suffix.size());
  }
  return std::nullopt;
}

// glibc keeps what a large apply freed for later, and the daemon's RSS
// would stay at the apply's peak for good.
void release_memory() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

// The outcome of an apply that could not run: the message says why (the
// tree could not be read).
engine::ApplyOutcome failed_outcome(std::string message) {
  engine::ApplyOutcome outcome;
  outcome.started = engine::Clock::now();
  outcome.report.errors.push_back(std::move(message));
  return outcome;
}

}  // namespace

Coalescing::TimePoint Coalescing::take_at(bool bulk, TimePoint last_added,
                                          TimePoint held_since) const {
  if (!bulk) return held_since;
  return std::min(last_added + quiet, held_since + max_hold);
}

bool ApplyLoop::Batch::empty() const {
  return size() == 0 && !resync;
}

size_t ApplyLoop::Batch::size() const {
  return paths.size() + domains.size() + waiters.size() + tasks.size() +
         (config ? 1 : 0);
}

bool ApplyLoop::Batch::bulk() const {
  return !resync && !config && tasks.empty() && several_domains(paths, domains);
}

bool ApplyLoop::Batch::has_changes() const {
  return resync || config || !paths.empty() || !domains.empty();
}

bool several_domains(const std::vector<std::filesystem::path>& paths,
                     const std::vector<std::string>& domains) {
  std::optional<std::string_view> first;
  auto another = [&first](std::string_view key) {
    if (!first) first = key;
    return key != *first;
  };
  for (const auto& path : paths) {
    if (another(change_key(path))) return true;
  }
  for (const auto& domain : domains) {
    if (another(domain)) return true;
  }
  return false;
}

ApplyLoop::ApplyLoop(std::unique_ptr<engine::Engine> engine,
                     ApplyObserver observer)
    : observer_(std::move(observer)), engine_(std::move(engine)) {
  queued_.resync = true;
}

ApplyLoop::~ApplyLoop() {
  stop();
}

void ApplyLoop::start() {
  thread_ = std::thread([this] { loop(); });
}

void ApplyLoop::stop() {
  begin_stop();
  if (thread_.joinable()) thread_.join();
}

void ApplyLoop::begin_stop() {
  Batch left;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    left = std::move(queued_);
    queued_ = Batch{};
  }
  wake_.notify_all();
  if (left.size() == 0) return;
  spdlog::info(LogEvent("daemon.dropped")
                   .add("queued", left.size())
                   .add("waiting", drop(left))
                   .add("kept", "the next start's resync reads the tree")
                   .str());
}

// Once stopping, nothing is queued: no apply would take it, and a request
// left in the queue would wait until its client gave up.
void ApplyLoop::enqueue(const std::function<void(Batch&)>& add) {
  Batch refused;
  bool stopping;
  {
    std::lock_guard lock(mutex_);
    stopping = stopping_;
    add(stopping ? refused : queued_);
    if (!stopping) last_added_ = SteadyClock::now();
  }
  if (stopping) {
    drop(refused);
  } else {
    wake_.notify_one();
  }
}

// Outside the lock: whoever is told may queue more, and hears at once.
size_t ApplyLoop::drop(Batch& batch) {
  size_t told = 0;
  for (auto& done : batch.waiters) {
    if (!done) continue;
    done(nullptr);
    ++told;
  }
  for (auto& task : batch.tasks) {
    if (!task.dropped) continue;
    task.dropped();
    ++told;
  }
  return told;
}

void ApplyLoop::note_paths(std::vector<std::filesystem::path> paths) {
  enqueue([&](Batch& b) {
    b.paths.insert(b.paths.end(), std::make_move_iterator(paths.begin()),
                   std::make_move_iterator(paths.end()));
  });
}

void ApplyLoop::reconcile_domain(std::string domain, ApplyDone done) {
  {
    // The panel's rename of the saved file was noted before its hook
    // asked: if the apply now running took that note, it reads the file
    // as saved, and its outcome is this request's. Only while nothing
    // else waits, so that an answer still means that everything noted
    // before the request is applied.
    std::lock_guard lock(mutex_);
    if (in_flight_.open && in_flight_.saved.count(domain) &&
        !queued_.has_changes()) {
      if (done) in_flight_.waiters.push_back(std::move(done));
      return;
    }
  }
  enqueue([&](Batch& b) {
    b.domains.push_back(std::move(domain));
    if (done) b.waiters.push_back(std::move(done));
  });
}

void ApplyLoop::resync(ApplyDone done) {
  enqueue([&](Batch& b) {
    b.resync = true;
    if (done) b.waiters.push_back(std::move(done));
  });
}

void ApplyLoop::reconfigure(config::DaemonConfig config, ApplyDone done) {
  enqueue([&](Batch& b) {
    b.config = std::move(config);
    b.resync = true;
    if (done) b.waiters.push_back(std::move(done));
  });
}

void ApplyLoop::run(EngineTask task, TaskDropped dropped) {
  enqueue([&](Batch& b) {
    b.tasks.push_back({std::move(task), std::move(dropped)});
  });
}

std::shared_ptr<engine::Engine> ApplyLoop::current() const {
  std::lock_guard lock(engine_mutex_);
  return engine_;
}

config::DaemonConfig ApplyLoop::config() const {
  return current()->config();
}

std::shared_ptr<const nlohmann::json> ApplyLoop::status_snapshot() const {
  return current()->status_snapshot();
}

std::optional<std::string> ApplyLoop::server_error() const {
  return current()->server_error();
}

nlohmann::json ApplyLoop::domain_list() const {
  return current()->domain_list();
}

nlohmann::json ApplyLoop::domain(const std::string& name) const {
  return current()->domain(name);
}

unsigned long ApplyLoop::applies() const {
  std::lock_guard lock(mutex_);
  return applies_;
}

size_t ApplyLoop::queued() const {
  std::lock_guard lock(mutex_);
  return queued_.size();
}

std::optional<std::chrono::steady_clock::time_point> ApplyLoop::busy_since()
    const {
  std::lock_guard lock(mutex_);
  return busy_since_;
}

ApplyLoop::Batch ApplyLoop::take_batch() {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
  // Each enqueue wakes the thread, so the hold is decided again as the
  // batch grows.
  auto held_since = SteadyClock::now();
  while (!stopping_) {
    auto at = coalescing_.take_at(queued_.bulk(), last_added_, held_since);
    if (SteadyClock::now() >= at) break;
    wake_.wait_until(lock, at);
  }
  if (stopping_) return Batch{};  // begin_stop() dropped what was queued
  Batch batch = std::move(queued_);
  queued_ = Batch{};
  if (!batch.empty()) busy_since_ = std::chrono::steady_clock::now();
  in_flight_ = InFlight{!batch.empty(), {}, {}};
  for (const auto& path : batch.paths) {
    if (auto domain = saved_domain(path)) in_flight_.saved.emplace(*domain);
  }
  return batch;
}

void ApplyLoop::loop() {
  while (true) {
    Batch batch = take_batch();
    if (batch.empty()) return;  // stopping, and nothing was taken
    bool large = process(batch);
    batch = Batch{};
    if (large) release_memory();
    std::lock_guard lock(mutex_);
    busy_since_.reset();
    if (stopping_) return;
  }
}

void ApplyLoop::swap_engine(config::DaemonConfig config) {
  try {
    auto fresh = std::make_shared<engine::Engine>(std::move(config));
    std::lock_guard lock(engine_mutex_);
    engine_ = std::move(fresh);
  } catch (const std::exception& e) {
    if (observer_.engine_failed) observer_.engine_failed(e.what());
  }
}

std::optional<engine::ApplyOutcome> ApplyLoop::apply(Batch& batch) {
  auto engine = current();
  for (const auto& path : batch.paths) engine->note_path(path);
  for (const auto& domain : batch.domains) engine->note_domain(domain);
  try {
    if (batch.resync || resync_next_) {
      resync_next_ = false;
      return engine->resync();
    }
    if (engine->has_pending()) return engine->apply_pending();
    return std::nullopt;
  } catch (const std::exception& e) {
    // What was noted may be lost with the exception: the next apply
    // reads everything again rather than trust the in-memory state. Not
    // queued at once, or a tree that stays unreadable would spin.
    resync_next_ = true;
    return failed_outcome(e.what());
  }
}

bool ApplyLoop::process(Batch& batch) {
  if (batch.config) swap_engine(std::move(*batch.config));
  for (auto& task : batch.tasks) {
    try {
      task.run(*current());
    } catch (const std::exception& e) {
      spdlog::error(
          LogEvent("daemon.task_failed").add("error", e.what()).str());
    }
  }

  auto outcome = apply(batch);
  if (outcome) {
    {
      std::lock_guard lock(mutex_);
      ++applies_;
    }
    if (observer_.applied) observer_.applied(*outcome);
  }
  bool large =
      outcome && (outcome->full || outcome->domains.size() >= kLargeApply);
  {
    // Closed before anyone hears: a request from now on takes the next
    // apply.
    std::lock_guard lock(mutex_);
    for (auto& done : in_flight_.waiters)
      batch.waiters.push_back(std::move(done));
    in_flight_ = InFlight{};
  }
  answer(batch.waiters, std::move(outcome));
  return large;
}

// Every waiter hears the same outcome, shared rather than copied: a bulk
// edit has hundreds of save hooks waiting for one apply.
void ApplyLoop::answer(std::vector<ApplyDone>& waiters,
                       std::optional<engine::ApplyOutcome> outcome) {
  if (waiters.empty()) return;
  // Every request that waits notes something, so an apply ran; should
  // none have, the waiters still hear "unchanged" rather than hang.
  if (!outcome) {
    outcome.emplace();
    outcome->started = engine::Clock::now();
  }
  auto shared =
      std::make_shared<const engine::ApplyOutcome>(std::move(*outcome));
  for (auto& done : waiters) {
    if (done) done(shared);
  }
}

}  // namespace havenoro::daemon
