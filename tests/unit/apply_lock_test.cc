// Verifies that one applier at a time works on an output directory: a
// second one (another thread's, another process's) waits for the lock or
// fails with a message naming its holder, nothing it left is torn, and
// the daemon's caches notice files that another applier wrote.
// Candidates are checked by the real Exim.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <thread>

#include "havenoro_relay/apply/applier.h"
#include "havenoro_relay/apply/live_files.h"
#include "havenoro_relay/apply/output_dir.h"
#include "havenoro_relay/model/relay_model.h"
#include "havenoro_relay/panel/panel_reader.h"
#include "havenoro_relay/render/credential_file.h"
#include "havenoro_relay/util/group.h"
#include "test_dir.h"

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::read_text;
using testing::write_text;

const fs::path kSource = HAVENORO_SOURCE_DIR;
constexpr const char* kDomains[] = {"a.example", "b.example"};

class ApplyLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    out_ = tmp_.path() / "out";
    write_text(tmp_.path() / "exim.conf",
               testing::example_exim_config(kSource, out_));
    config_.output_dir = out_;
    config_.templates_dir = kSource / "exim-templates";
    config_.exim_config = tmp_.path() / "exim.conf";
    config_.exim_pid_file = tmp_.path() / "no-exim.pid";
    config_.allow_private_relays = true;
  }

  // A panel tree of its own in which both domains relay as `username`,
  // and the model built from it.
  model::RelayModel model_of(const std::string& username) {
    fs::path root = tmp_.path() / ("panel-" + username);
    write_text(root / "data/users/alice/user.json",
               R"({"user":"alice","suspended":false})");
    for (const char* name : kDomains) {
      write_text(root / "data/users/alice/mail" / (std::string(name) + ".json"),
                 std::string(R"({"domain":")") + name +
                     R"(","smtp_relay":{"enabled":true,)"
                     R"("host":"192.0.2.25","port":2525,"username":")" +
                     username + R"(","password":"pw-)" + username + R"("}})");
    }
    panel::RelayRules rules{true};
    return model::build_relay_model(panel::read_panel(root, rules));
  }

  fs::path credential(const std::string& name) const {
    return out_ / "domains" / name / "smtp_relay.conf";
  }

  // The credential file `model` wants for `name`, rendered.
  static std::string wanted(const model::RelayModel& model,
                            const std::string& name) {
    return render::render_credential_file(name, *model.domains.at(name).relay);
  }

  // Every entry below the output directory with its content ("" for a
  // directory, the target for a symlink).
  std::map<std::string, std::string> tree() const {
    std::map<std::string, std::string> entries;
    for (const auto& e : fs::recursive_directory_iterator(out_)) {
      std::string rel = fs::relative(e.path(), out_).string();
      if (e.is_symlink()) {
        entries[rel] = "-> " + fs::read_symlink(e.path()).string();
      } else {
        entries[rel] = e.is_regular_file() ? read_text(e.path()) : "";
      }
    }
    return entries;
  }

  static bool done(std::future<ApplyReport>& f) {
    return f.wait_for(0s) == std::future_status::ready;
  }

  testing::TestDir tmp_;
  fs::path out_;
  config::DaemonConfig config_;
};

// Verifies that an apply waits while another Applier holds the lock,
// writes nothing meanwhile, and applies once the lock is let go.
TEST_F(ApplyLockTest, SecondApplierWaitsForTheHoldThenApplies) {
  Applier first(config_);
  auto hold = first.hold();
  ASSERT_TRUE(hold.held()) << hold.busy();

  Applier second(config_);
  second.set_lock_wait("once", 20s);
  auto model = model_of("waiter");
  auto started = std::chrono::steady_clock::now();
  auto applied =
      std::async(std::launch::async, [&] { return second.apply(model); });
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(done(applied));
  EXPECT_FALSE(fs::exists(out_ / "current"));
  EXPECT_FALSE(fs::exists(credential("a.example")));

  hold = Applier::Hold();  // lets go
  auto report = applied.get();
  ASSERT_TRUE(report.ok()) << report.errors.at(0);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 300ms);
  for (const char* name : kDomains) {
    EXPECT_EQ(read_text(credential(name)), wanted(model, name)) << name;
  }
}

// Verifies that an apply, a plan, a rollback and a hold that find the lock
// held for all of their wait fail naming the holder, and change nothing.
TEST_F(ApplyLockTest, BusyLockFailsAfterTheWaitAndChangesNothing) {
  Applier daemon(config_);
  auto old = model_of("old");
  ASSERT_TRUE(daemon.apply(old).ok());
  auto hold = daemon.hold();
  ASSERT_TRUE(hold.held());
  auto before = tree();

  Applier once(config_);
  once.set_lock_wait("once", 200ms);
  auto started = std::chrono::steady_clock::now();
  auto report = once.apply(model_of("new"));
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 5s);
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(report.failed_whole());
  EXPECT_TRUE(report.written.empty());
  std::string pid = std::to_string(::getpid());
  EXPECT_EQ(report.errors.at(0),
            "output directory " + out_.string() +
                " is busy: the havenoro-relayd daemon (pid " + pid +
                ") kept it locked for the 0.2 s waited; nothing was changed");
  EXPECT_EQ(report.generation, daemon.kept_generations().back());

  for (const auto& other : {once.plan(model_of("new")), once.rollback({})}) {
    ASSERT_FALSE(other.ok());
    EXPECT_NE(other.errors.at(0).find(" is busy: the havenoro-relayd daemon"),
              std::string::npos)
        << other.errors.at(0);
  }
  auto refused = once.hold();
  EXPECT_FALSE(refused.held());
  EXPECT_EQ(refused.holder().name, "daemon");
  EXPECT_EQ(refused.holder().pid, ::getpid());
  EXPECT_NE(refused.busy().find("is busy"), std::string::npos);
  EXPECT_EQ(tree(), before);
}

// Verifies that the lock holds across processes: a child process holds
// it, and an apply waits for it, fails naming the child's pid when the
// wait ends first, and applies once the child is gone.
TEST_F(ApplyLockTest, LockHeldByAnotherProcessIsWaitedFor) {
  Applier daemon(config_);
  ASSERT_TRUE(daemon.apply(model_of("old")).ok());
  int ready[2], release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  gid_t group = util::group_id(config_.exim_group);  // no NSS in the child
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only system calls and the lock: this is a forked test process.
    ::close(ready[0]);
    ::close(release[1]);
    OutputDir out(out_, group);
    OutputLock lock(out, 0ms);
    if (lock.held()) lock.record("daemon");
    char c = lock.held() ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    (void)!::read(release[0], &c, 1);  // until the parent closes it
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');

  Applier once(config_);
  once.set_lock_wait("once", 300ms);
  auto busy = once.apply(model_of("new"));
  ASSERT_FALSE(busy.ok());
  EXPECT_NE(busy.errors.at(0).find("the havenoro-relayd daemon (pid " +
                                   std::to_string(child) + ")"),
            std::string::npos)
      << busy.errors.at(0);

  once.set_lock_wait("once", 20s);
  auto model = model_of("new");
  auto applied =
      std::async(std::launch::async, [&] { return once.apply(model); });
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(done(applied));
  ::close(release[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  auto report = applied.get();
  ASSERT_TRUE(report.ok()) << report.errors.at(0);
  EXPECT_EQ(read_text(credential("a.example")), wanted(model, "a.example"));
  ::close(ready[0]);
}

// Verifies that two Appliers applying settings of their own to the same
// output directory from two threads at once take turns: every apply
// writes both domains and passes its Exim checks (neither sees the
// other's candidate tree), and the live files are whole, both from one
// apply.
TEST_F(ApplyLockTest, TwoAppliersAtOnceTakeTurns) {
  constexpr int kRounds = 6;
  std::map<std::string, model::RelayModel> models;
  for (const char* user : {"alpha", "beta"}) {
    for (int i = 0; i < kRounds; ++i) {
      std::string name = user + std::to_string(i);
      models[name] = model_of(name);
    }
  }
  auto loop = [&](const std::string& user) {
    Applier applier(config_);
    std::vector<std::string> problems;
    for (int i = 0; i < kRounds; ++i) {
      auto report = applier.apply(models.at(user + std::to_string(i)));
      problems.insert(problems.end(), report.errors.begin(),
                      report.errors.end());
      if (report.written.size() != 2) problems.push_back("not both written");
    }
    return problems;
  };
  auto alpha = std::async(std::launch::async, loop, "alpha");
  auto beta = std::async(std::launch::async, loop, "beta");
  EXPECT_EQ(alpha.get(), std::vector<std::string>{});
  EXPECT_EQ(beta.get(), std::vector<std::string>{});

  std::string last;
  for (const auto& [name, model] : models) {
    if (read_text(credential("a.example")) == wanted(model, "a.example")) {
      last = name;
    }
  }
  ASSERT_NE(last, "");
  EXPECT_EQ(last.back(), '0' + kRounds - 1);
  EXPECT_EQ(read_text(credential("b.example")),
            wanted(models.at(last), "b.example"));
  EXPECT_FALSE(fs::exists(out_ / ".candidate/domains/a.example"));
}

// Verifies that the daemon's Applier, after another Applier (a --once)
// rewrote its files, puts its own settings back: in an apply of the
// domain (the recorded stamps differ), in a resync that would compare
// only what changed in the panel, and in one whose stamps were
// prefetched before the other applier ran.
TEST_F(ApplyLockTest, DaemonNoticesFilesAnotherApplierWrote) {
  auto mine = model_of("daemon");
  auto theirs = model_of("once");
  Applier daemon(config_);
  Applier once(config_);
  once.set_lock_wait("once", 20s);
  ASSERT_TRUE(daemon.apply(mine).ok());
  auto unchanged = ApplyScope::all();
  unchanged.changed = std::set<std::string>{};
  ASSERT_TRUE(daemon.apply(mine, unchanged).unchanged());

  ASSERT_TRUE(once.apply(theirs).ok());
  auto one = daemon.apply(mine, ApplyScope::of({"a.example"}, false));
  ASSERT_TRUE(one.ok()) << one.errors.at(0);
  EXPECT_EQ(one.written,
            std::vector<std::string>{"domains/a.example/smtp_relay.conf"});
  EXPECT_EQ(read_text(credential("a.example")), wanted(mine, "a.example"));
  EXPECT_EQ(read_text(credential("b.example")), wanted(theirs, "b.example"));

  auto resync = daemon.apply(mine, unchanged);
  ASSERT_TRUE(resync.ok()) << resync.errors.at(0);
  EXPECT_EQ(resync.written,
            std::vector<std::string>{"domains/b.example/smtp_relay.conf"});
  ASSERT_TRUE(daemon.apply(mine, unchanged).unchanged());

  daemon.prefetch();  // stamps of the daemon's own files
  ASSERT_TRUE(once.apply(theirs).ok());
  auto after = daemon.apply(mine, unchanged);
  ASSERT_TRUE(after.ok()) << after.errors.at(0);
  EXPECT_EQ(after.written.size(), 2u);
  for (const char* name : kDomains) {
    EXPECT_EQ(read_text(credential(name)), wanted(mine, name)) << name;
  }
}

// Verifies that the recorded stamp of a live file no longer matches once
// another writer put a file of the same size in its place, however soon.
TEST(LiveFilesTest, NoticesAFileAnotherWriterPutInPlace) {
  testing::TestDir tmp;
  gid_t group = util::group_id("Debian-exim");
  const std::string path = "domains/a.example/smtp_relay.conf";
  OutputDir daemon(tmp.path() / "out", group);
  daemon.commit({daemon.stage(path, "username: one\n", 0640)});
  LiveFiles seen;
  seen.wrote(daemon, path, "username: one\n");
  ASSERT_TRUE(seen.all_unchanged(daemon));
  ASSERT_TRUE(seen.same(daemon, path, "username: one\n", 0640));

  OutputDir other(tmp.path() / "out", group);
  other.commit({other.stage(path, "username: two\n", 0640)}, false);
  EXPECT_FALSE(seen.all_unchanged(daemon));
  EXPECT_FALSE(seen.same_hash(daemon, path,
                              std::hash<std::string>{}("username: one\n")));
  EXPECT_FALSE(seen.same(daemon, path, "username: one\n", 0640));
}

// Verifies the lock file: a dot-name no listing shows, 0640 root:group,
// counting the applies that changed something and left alone by those
// that did not (nor by a plan); a symlink planted in its place is
// refused, not followed, and the apply changes nothing.
TEST_F(ApplyLockTest, LockFileIsPlainAndNeverFollowed) {
  Applier daemon(config_);
  auto old = model_of("old");
  ASSERT_TRUE(daemon.apply(old).ok());
  fs::path lock = out_ / ".lock";
  struct stat st;
  ASSERT_EQ(::lstat(lock.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, util::group_id(config_.exim_group));
  std::string pid = std::to_string(::getpid());
  EXPECT_EQ(read_text(lock), "serial=1 pid=" + pid + " holder=daemon\n");
  OutputDir out(out_, util::group_id(config_.exim_group));
  for (const auto& name : out.list("")) EXPECT_NE(name, ".lock");

  Applier once(config_);
  once.set_lock_wait("once", 20s);
  ASSERT_TRUE(once.apply(old).unchanged());
  ASSERT_TRUE(once.plan(model_of("new")).ok());
  struct stat again;
  ASSERT_EQ(::lstat(lock.c_str(), &again), 0);
  EXPECT_EQ(util::stamp_of(again), util::stamp_of(st));
  ASSERT_FALSE(once.apply(model_of("new")).unchanged());
  EXPECT_EQ(read_text(lock), "serial=2 pid=" + pid + " holder=once\n");

  fs::remove(lock);
  fs::path target = tmp_.path() / "target";
  write_text(target, "untouched\n");
  fs::create_symlink(target, lock);
  auto before = tree();
  EXPECT_THROW(daemon.apply(model_of("new")), std::system_error);
  EXPECT_EQ(read_text(target), "untouched\n");
  EXPECT_EQ(tree(), before);
}

}  // namespace
}  // namespace havenoro::apply
