#include "havenoro_relay/daemon/apply_loop.h"

#include <spdlog/spdlog.h>

#include "havenoro_relay/daemon/log_event.h"

namespace havenoro::daemon {
namespace {

// A save is a few events (a temporary file written, then renamed), and a
// panel saving many domains sends them back to back: waiting this long
// after the first lets most of a burst land in the same apply, at a cost
// a person never notices.
constexpr std::chrono::milliseconds kSettle{25};

}  // namespace

engine::ApplyOutcome failed_outcome(std::string message) {
  engine::ApplyOutcome outcome;
  outcome.started = engine::Clock::now();
  outcome.report.errors.push_back(std::move(message));
  return outcome;
}

bool ApplyLoop::Batch::empty() const {
  return size() == 0 && !resync;
}

size_t ApplyLoop::Batch::size() const {
  return paths.size() + domains.size() + waiters.size() + tasks.size() +
         (config ? 1 : 0);
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
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();

  Batch left;
  {
    std::lock_guard lock(mutex_);
    left = std::move(queued_);
    queued_ = Batch{};
  }
  auto outcome = failed_outcome("havenoro-relayd stopped before applying");
  for (auto& done : left.waiters) {
    if (done) done(outcome);
  }
}

void ApplyLoop::enqueue(const std::function<void(Batch&)>& add) {
  {
    std::lock_guard lock(mutex_);
    add(queued_);
  }
  wake_.notify_one();
}

void ApplyLoop::note_paths(std::vector<std::filesystem::path> paths) {
  enqueue([&](Batch& b) {
    b.paths.insert(b.paths.end(), std::make_move_iterator(paths.begin()),
                   std::make_move_iterator(paths.end()));
  });
}

void ApplyLoop::reconcile_domain(std::string domain, ApplyDone done) {
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

void ApplyLoop::run(EngineTask task) {
  enqueue([&](Batch& b) { b.tasks.push_back(std::move(task)); });
}

std::shared_ptr<engine::Engine> ApplyLoop::current() const {
  std::lock_guard lock(engine_mutex_);
  return engine_;
}

nlohmann::json ApplyLoop::status() const {
  return current()->status();
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
  if (!stopping_) wake_.wait_for(lock, kSettle, [this] { return stopping_; });
  Batch batch = std::move(queued_);
  queued_ = Batch{};
  if (!batch.empty()) busy_since_ = std::chrono::steady_clock::now();
  return batch;
}

void ApplyLoop::loop() {
  while (true) {
    Batch batch = take_batch();
    if (batch.empty()) return;  // stopping, and nothing was taken
    process(batch);
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

void ApplyLoop::process(Batch& batch) {
  if (batch.config) swap_engine(std::move(*batch.config));
  for (auto& task : batch.tasks) {
    try {
      task(*current());
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
  // Every request that waits notes something, so an apply ran; should
  // none have, the waiters still hear "unchanged" rather than hang.
  engine::ApplyOutcome nothing;
  nothing.started = engine::Clock::now();
  for (auto& done : batch.waiters) done(outcome ? *outcome : nothing);
}

}  // namespace havenoro::daemon
