// Verifies the applying thread with a real Engine (candidates checked by
// the real Exim, no Exim daemon to reload): coalescing, waiters, tasks,
// reconfiguring and stopping, and what a stop tells the control
// commands' waiting requests.

#include "havenoro_relay/daemon/apply_loop.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include "havenoro_relay/daemon/control_commands.h"
#include "havenoro_relay/daemon/daemon_info.h"
#include "test_dir.h"

namespace havenoro::daemon {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using havenoro::testing::read_text;
using havenoro::testing::write_text;

const fs::path kSource = HAVENORO_SOURCE_DIR;

class ApplyLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    panel_ = tmp_.path() / "panel";
    out_ = tmp_.path() / "out";
    write_text(tmp_.path() / "exim.conf",
               havenoro::testing::example_exim_config(kSource, out_));
    write_text(panel_ / "data/users/alice/user.json",
               R"({"user":"alice","suspended":false})");
    config_.panel_root = panel_;
    config_.output_dir = out_;
    config_.templates_dir = kSource / "exim-templates";
    config_.exim_config = tmp_.path() / "exim.conf";
    config_.exim_pid_file = tmp_.path() / "no-exim.pid";
    config_.allow_private_relays = true;
  }

  std::unique_ptr<ApplyLoop> started_loop();

  std::unique_ptr<ApplyLoop> make_loop() {
    ApplyObserver observer;
    observer.applied = [this](const engine::ApplyOutcome&) { ++observed_; };
    return std::make_unique<ApplyLoop>(
        std::make_unique<engine::Engine>(config_), observer);
  }

  fs::path domain_file(const std::string& name) {
    return panel_ / "data/users/alice/mail" / (name + ".json");
  }

  fs::path write_domain(const std::string& name, int port) {
    write_text(domain_file(name),
               R"({"domain":")" + name +
                   R"(","smtp_relay":{"enabled":true,"host":"192.0.2.25",)"
                   R"("port":)" +
                   std::to_string(port) + "}}");
    return domain_file(name);
  }

  std::string route(const std::string& name) {
    auto text = read_text(out_ / "domains" / name / "smtp_relay.conf");
    auto at = text.find("route: ");
    return at == std::string::npos
               ? ""
               : text.substr(at + 7, text.find('\n', at) - at - 7);
  }

  // Waits (bounded) for the apply that answers a request.
  static engine::ApplyOutcome wait_for(
      std::future<engine::ApplyOutcome>& done) {
    EXPECT_EQ(done.wait_for(60s), std::future_status::ready);
    return done.get();
  }

  havenoro::testing::TestDir tmp_;
  fs::path panel_;
  fs::path out_;
  config::DaemonConfig config_;
  std::atomic<int> observed_{0};
};

ApplyDone into(std::promise<engine::ApplyOutcome>& promise) {
  return [&promise](const SharedOutcome& o) { promise.set_value(*o); };
}

// A loop that has made its first apply, for the tests of what follows.
std::unique_ptr<ApplyLoop> ApplyLoopTest::started_loop() {
  auto loop = make_loop();
  std::promise<engine::ApplyOutcome> first;
  loop->resync(into(first));
  loop->start();
  auto future = first.get_future();
  wait_for(future);
  return loop;
}

ApplyDone shared_into(std::promise<SharedOutcome>& promise) {
  return [&promise](const SharedOutcome& o) { promise.set_value(o); };
}

// Verifies that the first apply is a full resync of what is on disk.
TEST_F(ApplyLoopTest, StartsWithAFullResync) {
  write_domain("a.example", 2525);
  auto loop = make_loop();
  std::promise<engine::ApplyOutcome> first;
  loop->resync(into(first));  // folded into the first apply
  loop->start();
  auto future = first.get_future();
  auto o = wait_for(future);
  EXPECT_TRUE(o.full);
  EXPECT_TRUE(o.report.ok()) << o.report.errors.at(0);
  EXPECT_EQ(route("a.example"), "192.0.2.25:2525");
  EXPECT_EQ(loop->applies(), 1u);
  EXPECT_EQ(observed_, 1);
}

// Verifies that a reconcile hears the apply that covered its domain.
TEST_F(ApplyLoopTest, ReconcileHearsItsDomainsOutcome) {
  auto loop = started_loop();
  // Written after the first resync read the tree: the reconcile applies it.
  write_domain("b.example", 2526);
  std::promise<engine::ApplyOutcome> done;
  loop->reconcile_domain("b.example", into(done));
  auto future = done.get_future();
  auto o = wait_for(future);
  bool found = false;
  for (const auto& d : o.domains) {
    if (d.domain == "b.example") {
      found = true;
      EXPECT_EQ(d.result, "applied");
      EXPECT_EQ(d.route, "relay");
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(route("b.example"), "192.0.2.25:2526");
}

// Verifies that notes arriving while an apply runs are folded into the
// next one: 200 notes cost a few applies, and the last write wins.
TEST_F(ApplyLoopTest, FoldsABurstIntoAFewApplies) {
  auto loop = started_loop();
  auto before = loop->applies();

  for (int i = 0; i < 200; ++i) {
    std::string name = "burst" + std::to_string(i % 20) + ".example";
    loop->note_paths({write_domain(name, 3000 + i)});
  }
  std::promise<engine::ApplyOutcome> last;
  loop->reconcile_domain("burst19.example", into(last));
  auto future = last.get_future();
  wait_for(future);
  auto applies = loop->applies() - before;
  std::cout << "200 notes took " << applies << " applies\n";
  EXPECT_GE(applies, 1u);
  EXPECT_LE(applies, 10u);
  for (int d = 0; d < 20; ++d) {
    EXPECT_EQ(route("burst" + std::to_string(d) + ".example"),
              "192.0.2.25:" + std::to_string(3180 + d));
  }
}

// Verifies that the requests one apply answers share its outcome rather
// than each getting a copy.
TEST_F(ApplyLoopTest, WaitersOfOneApplyShareItsOutcome) {
  write_domain("e.example", 2527);
  write_domain("f.example", 2528);
  auto loop = make_loop();
  std::promise<SharedOutcome> first;
  std::promise<SharedOutcome> second;
  // Queued before the thread starts: both are in the first apply.
  loop->reconcile_domain("e.example", shared_into(first));
  loop->reconcile_domain("f.example", shared_into(second));
  loop->start();
  auto a = first.get_future();
  auto b = second.get_future();
  ASSERT_EQ(a.wait_for(60s), std::future_status::ready);
  ASSERT_EQ(b.wait_for(60s), std::future_status::ready);
  auto outcome = a.get();
  EXPECT_EQ(outcome, b.get());
  EXPECT_TRUE(outcome->full);
  EXPECT_EQ(loop->applies(), 1u);
}

// Holds the applying thread in a task until released, so that the test
// can queue work behind it and know what the next batch holds.
class Gate {
 public:
  EngineTask task() {
    return [this](engine::Engine&) {
      entered_.set_value();
      released_.get_future().wait();
    };
  }
  void wait_entered() {
    ASSERT_EQ(entered_.get_future().wait_for(60s), std::future_status::ready);
  }
  void release() { released_.set_value(); }

 private:
  std::promise<void> entered_;
  std::promise<void> released_;
};

// Queues `held` as the next batch's first task together with `notes`,
// behind a task that holds the thread until both are queued, and returns
// once that batch is being applied: the test knows what it holds.
void hold_next_batch(ApplyLoop& loop, Gate& held,
                     std::vector<std::filesystem::path> notes) {
  Gate busy;
  loop.run(busy.task());
  busy.wait_entered();
  loop.run(held.task());
  loop.note_paths(std::move(notes));
  busy.release();
  held.wait_entered();
}

// Verifies that a save hook's reconcile, arriving while the apply runs
// that took the save, is answered by that apply: no apply of its own.
TEST_F(ApplyLoopTest, ReconcileJoinsTheApplyThatTookTheSave) {
  auto loop = started_loop();
  auto before = loop->applies();

  // The next batch: a task that holds its apply, and the save.
  Gate held;
  hold_next_batch(
      *loop, held,
      {domain_file(".h.example.json.tmp"), write_domain("h.example", 2530)});
  std::promise<engine::ApplyOutcome> done;
  loop->reconcile_domain("h.example", into(done));
  EXPECT_EQ(loop->queued(), 0u);
  held.release();
  auto future = done.get_future();
  auto o = wait_for(future);
  ASSERT_EQ(o.domains.size(), 1u);
  EXPECT_EQ(o.domains[0].domain, "h.example");
  EXPECT_EQ(o.domains[0].result, "applied");
  EXPECT_EQ(loop->applies(), before + 1);
}

// Verifies that a reconcile waits for the next apply when the one running
// did not take a save of its domain, or when more was noted since (here
// the domain's next save).
TEST_F(ApplyLoopTest, ReconcileTakesTheNextApplyOtherwise) {
  auto loop = started_loop();
  auto before = loop->applies();

  Gate held;
  hold_next_batch(*loop, held, {write_domain("i.example", 2531)});
  write_domain("j.example", 2532);  // saved, but not noted
  std::promise<engine::ApplyOutcome> unseen;
  loop->reconcile_domain("j.example", into(unseen));
  loop->note_paths({write_domain("i.example", 2533)});  // saved again
  std::promise<engine::ApplyOutcome> again;
  loop->reconcile_domain("i.example", into(again));
  EXPECT_EQ(loop->queued(), 5u);  // a path, two domains, two waiters
  held.release();
  auto a = unseen.get_future();
  auto b = again.get_future();
  auto o = wait_for(a);
  ASSERT_EQ(o.domains.size(), 2u);  // i.example and j.example
  EXPECT_EQ(o.domains[1].domain, "j.example");
  EXPECT_EQ(o.domains[1].result, "applied");
  EXPECT_EQ(wait_for(b).started, o.started);
  EXPECT_EQ(route("i.example"), "192.0.2.25:2533");
  EXPECT_EQ(loop->applies(), before + 2);
}

// Verifies that the status snapshot is built once per apply: readers in
// between share one document, and the next apply makes a new one.
TEST_F(ApplyLoopTest, StatusSnapshotChangesOnlyWithAnApply) {
  auto loop = started_loop();
  auto before = loop->status_snapshot();
  EXPECT_EQ(loop->status_snapshot(), before);
  EXPECT_FALSE(before->contains("uptime_s"));  // added per request

  write_domain("g.example", 2529);
  std::promise<engine::ApplyOutcome> done;
  loop->reconcile_domain("g.example", into(done));
  auto future = done.get_future();
  wait_for(future);
  auto after = loop->status_snapshot();
  EXPECT_NE(after, before);
  EXPECT_EQ((*after)["domains"]["relayed"], 1);
  EXPECT_EQ((*after)["last_apply"]["changed_domains"][0], "g.example");
}

// Verifies what counts as one domain's changes, applied at once, and
// what as a bulk edit, gathered: a save writes a temporary and renames
// it, and its save hook reconciles the domain by name.
TEST(Coalescing, OneDomainsSaveIsNotABulkEdit) {
  fs::path mail = "/panel/data/users/alice/mail";
  std::vector<fs::path> save = {mail / ".a.example.json.tmp",
                                mail / "a.example.json"};
  EXPECT_FALSE(several_domains(save, {"a.example"}));
  EXPECT_FALSE(several_domains({mail / "a.example.dkim.pem"}, {}));
  EXPECT_FALSE(several_domains({}, {"a.example", "a.example"}));
  EXPECT_FALSE(several_domains(
      {"/panel/conf/.mail.json.tmp", "/panel/conf/mail.json"}, {""}));
  EXPECT_TRUE(several_domains(save, {"b.example"}));
  EXPECT_TRUE(
      several_domains({mail / "a.example.json", mail / "b.example.json"}, {}));
  EXPECT_TRUE(several_domains({"/panel/conf/mail.json"}, {"a.example"}));
}

// Verifies when a batch is taken: one domain's changes at once, a bulk
// edit once the queue is quiet, and never later than the longest hold.
TEST(Coalescing, BulkEditWaitsForQuietUpToTheLongestHold) {
  using namespace std::chrono;
  Coalescing c;
  auto t0 = steady_clock::time_point{} + hours(1);
  EXPECT_EQ(c.take_at(false, t0 + 5ms, t0), t0);
  EXPECT_EQ(c.take_at(true, t0 + 5ms, t0), t0 + 5ms + c.quiet);
  EXPECT_EQ(c.take_at(true, t0 + c.max_hold, t0), t0 + c.max_hold);
}

// Verifies that a task runs on the applying thread with the engine.
TEST_F(ApplyLoopTest, RunsTasksOnTheApplyingThread) {
  auto loop = make_loop();
  loop->start();
  std::promise<std::thread::id> ran;
  loop->run([&ran](engine::Engine& e) {
    e.plan();
    ran.set_value(std::this_thread::get_id());
  });
  auto future = ran.get_future();
  ASSERT_EQ(future.wait_for(60s), std::future_status::ready);
  EXPECT_NE(future.get(), std::this_thread::get_id());
}

// Verifies that a tree that cannot be read fails once, without spinning.
TEST_F(ApplyLoopTest, UnreadableTreeFailsWithoutRetryingAtOnce) {
  config_.panel_root = tmp_.path() / "missing";
  auto loop = make_loop();
  std::promise<engine::ApplyOutcome> done;
  loop->resync(into(done));
  loop->start();
  auto future = done.get_future();
  auto o = wait_for(future);
  EXPECT_FALSE(o.report.ok());
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(loop->applies(), 1u);
}

// Verifies that a new configuration replaces the engine.
TEST_F(ApplyLoopTest, ReconfigureUsesTheNewConfiguration) {
  auto loop = make_loop();
  loop->start();
  write_text(tmp_.path() / "other/data/users/bob/user.json",
             R"({"user":"bob","suspended":false})");
  write_text(tmp_.path() / "other/data/users/bob/mail/c.example.json",
             R"({"domain":"c.example"})");
  auto other = config_;
  other.panel_root = tmp_.path() / "other";
  std::promise<engine::ApplyOutcome> done;
  loop->reconfigure(other, into(done));
  auto future = done.get_future();
  EXPECT_TRUE(wait_for(future).full);
  EXPECT_FALSE(loop->domain("c.example").is_null());
}

// Verifies that stopping tells requests no apply will take: no outcome.
TEST_F(ApplyLoopTest, StopAnswersWhatIsStillQueued) {
  auto loop = make_loop();
  std::promise<SharedOutcome> done;
  loop->reconcile_domain("d.example", shared_into(done));
  loop->stop();
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(60s), std::future_status::ready);
  EXPECT_EQ(future.get(), nullptr);
}

// Every reply each request got, by the order the requests were made.
class Replies {
 public:
  Responder responder() {
    std::lock_guard lock(mutex_);
    size_t n = replies_.size();
    replies_.emplace_back();
    return [this, n](Reply r) {
      std::lock_guard lock(mutex_);
      replies_[n].push_back(std::move(r));
    };
  }
  std::vector<Reply> of(size_t n) {
    std::lock_guard lock(mutex_);
    return replies_.at(n);
  }
  size_t count() {
    std::lock_guard lock(mutex_);
    return replies_.size();
  }

 private:
  std::mutex mutex_;
  std::vector<std::vector<Reply>> replies_;
};

// Verifies what a stop tells the requests that wait, through the control
// commands: the one that joined the running apply hears it, the ones
// queued behind it and one that comes during the stop hear, once each,
// that the daemon is stopping.
TEST_F(ApplyLoopTest, StopTellsEveryWaitingRequestOnce) {
  auto loop = started_loop();
  DaemonInfo info(tmp_.path() / "config.json");
  CommandTable commands = make_commands(*loop, info);
  Replies replies;
  auto ask = [&](const std::string& command, nlohmann::json args) {
    commands.at(command)(args, replies.responder());
  };

  Gate held;
  hold_next_batch(
      *loop, held,
      {domain_file(".h.example.json.tmp"), write_domain("h.example", 2540)});
  ask("reconcile", {{"domain", "h.example"}, {"wait", true}});  // joins it
  ask("reconcile", {{"domain", "q.example"}, {"wait", true}});
  ask("reconcile", {{"server", true}, {"wait", true}});
  ask("reconcile", {{"wait", true}});
  ask("reconcile", {{"release_pin", true}});
  ask("config-test", nlohmann::json::object());
  ask("rollback", nlohmann::json::object());
  const size_t queued = replies.count();

  std::thread stopping([&] { loop->stop(); });
  // Once the stop has begun a request is answered at once, without an
  // apply: ask until one is, before the held apply may end.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  do {
    ask("reconcile", {{"domain", "late.example"}, {"wait", true}});
    if (!replies.of(replies.count() - 1).empty()) break;
    std::this_thread::sleep_for(1ms);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_FALSE(replies.of(replies.count() - 1).empty())
      << "a request during the stop was not answered";
  held.release();
  stopping.join();

  auto joined = replies.of(0);
  ASSERT_EQ(joined.size(), 1u);
  EXPECT_EQ(joined[0].result, Result::kSuccess);
  EXPECT_EQ(joined[0].text, "h.example: applied (route relay, generation 1)");

  const std::string stopping_text =
      ": not applied yet: havenoro-relayd is stopping; the change will be "
      "applied when it starts again";
  const std::vector<std::string> texts = {
      "q.example" + stopping_text,
      "the server-wide relay" + stopping_text,
      "the panel tree" + stopping_text,
      "reconcile not run: havenoro-relayd is stopping; ask again once it "
      "is back",
      "config-test not run: havenoro-relayd is stopping; ask again once it "
      "is back",
      "rollback not run: havenoro-relayd is stopping; ask again once it is "
      "back"};
  for (size_t n = 1; n < replies.count(); ++n) {
    auto got = replies.of(n);
    ASSERT_EQ(got.size(), 1u) << "request " << n;
    bool not_run =
        n < queued && texts.at(n - 1).find("not run") != std::string::npos;
    EXPECT_EQ(got[0].result, not_run ? Result::kError : Result::kStopping);
    EXPECT_EQ(got[0].text,
              n < queued ? texts.at(n - 1) : "late.example" + stopping_text);
  }
  EXPECT_EQ(route("h.example"), "192.0.2.25:2540");
}

}  // namespace
}  // namespace havenoro::daemon
