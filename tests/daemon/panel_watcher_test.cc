// Verifies the panel watcher against a real inotify on a temporary tree:
// which saves it reports, and that it follows directories as they come
// and go.

#include "havenoro_relay/daemon/panel_watcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "test_dir.h"

namespace havenoro::daemon {
namespace {

namespace fs = std::filesystem;
using testing::write_text;

class PanelWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() / "panel";
    fs::create_directories(root_ / "conf");
    fs::create_directories(root_ / "data/users/alice/mail");
    watcher_ = std::make_unique<PanelWatcher>(root_);
    EXPECT_TRUE(watcher_->rescan().empty());
  }

  // Everything reported until the queue stays quiet for a moment.
  PanelChanges collect() {
    PanelChanges all;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{watcher_->fd(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) break;
      auto some = watcher_->read_changes();
      all.paths.insert(some.paths.begin(), some.paths.end());
      all.overflow |= some.overflow;
      all.root_gone |= some.root_gone;
    }
    return all;
  }

  fs::path mail(const std::string& user, const std::string& name) {
    return root_ / "data/users" / user / "mail" / name;
  }

  // What the panel does: write .<name>.tmp, rename it over the file.
  void save(const fs::path& file, const std::string& text) {
    fs::path tmp =
        file.parent_path() / ("." + file.filename().string() + ".tmp");
    write_text(tmp, text);
    fs::rename(tmp, file);
  }

  testing::TestDir tmp_;
  fs::path root_;
  std::unique_ptr<PanelWatcher> watcher_;
};

// Verifies that a file renamed into place is reported by its final name.
TEST_F(PanelWatcherTest, ReportsFileRenamedIntoPlace) {
  save(mail("alice", "a.example.json"), "{}");
  auto c = collect();
  EXPECT_TRUE(c.paths.count(mail("alice", "a.example.json")));
  EXPECT_FALSE(c.overflow);
}

// Verifies that a file written in place is reported once it is closed,
// and not while its writer still holds it open.
TEST_F(PanelWatcherTest, ReportsInPlaceWriteOnlyWhenClosed) {
  fs::path file = mail("alice", "b.example.json");
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "{\"dom", 5), 5);
  EXPECT_FALSE(collect().paths.count(file));
  ASSERT_EQ(::write(fd, "ain\"}", 5), 5);
  ::close(fd);
  EXPECT_TRUE(collect().paths.count(file));
}

// Verifies that a removed file is reported.
TEST_F(PanelWatcherTest, ReportsRemovedFile) {
  fs::path file = mail("alice", "c.example.json");
  write_text(file, "{}");
  collect();
  fs::remove(file);
  EXPECT_TRUE(collect().paths.count(file));
}

// Verifies that the server-wide file is watched.
TEST_F(PanelWatcherTest, ReportsServerWideFile) {
  save(root_ / "conf/mail.json", "{}");
  EXPECT_TRUE(collect().paths.count(root_ / "conf/mail.json"));
}

// Verifies that a user created after the start is watched: its files, and
// files saved later in its new mail directory.
TEST_F(PanelWatcherTest, FollowsNewUserDirectories) {
  size_t before = watcher_->watch_count();
  fs::create_directories(root_ / "data/users/bob/mail");
  write_text(root_ / "data/users/bob/user.json", "{}");
  write_text(mail("bob", "early.example.json"), "{}");
  auto first = collect();
  EXPECT_TRUE(first.paths.count(root_ / "data/users/bob"));
  EXPECT_TRUE(first.paths.count(mail("bob", "early.example.json")));
  EXPECT_EQ(watcher_->watch_count(), before + 2);

  save(mail("bob", "late.example.json"), "{}");
  EXPECT_TRUE(collect().paths.count(mail("bob", "late.example.json")));
}

// Verifies that a removed user directory is reported and unwatched.
TEST_F(PanelWatcherTest, DropsRemovedDirectories) {
  fs::create_directories(root_ / "data/users/carol/mail");
  collect();
  size_t with = watcher_->watch_count();
  fs::remove_all(root_ / "data/users/carol");
  EXPECT_TRUE(collect().paths.count(root_ / "data/users/carol"));
  EXPECT_EQ(watcher_->watch_count(), with - 2);
}

// Verifies that a user directory renamed away is reported under both names
// and watched under the new one only.
TEST_F(PanelWatcherTest, FollowsRenamedUserDirectory) {
  fs::rename(root_ / "data/users/alice", root_ / "data/users/alicia");
  auto c = collect();
  EXPECT_TRUE(c.paths.count(root_ / "data/users/alice"));
  EXPECT_TRUE(c.paths.count(root_ / "data/users/alicia"));
  save(mail("alicia", "d.example.json"), "{}");
  EXPECT_TRUE(collect().paths.count(mail("alicia", "d.example.json")));
}

// Verifies that directories outside the panel's layout are not watched.
TEST_F(PanelWatcherTest, IgnoresDirectoriesOutsideTheLayout) {
  size_t before = watcher_->watch_count();
  fs::create_directories(root_ / "data/users/alice/mail/deeper/still");
  fs::create_directories(root_ / "other");
  collect();
  EXPECT_EQ(watcher_->watch_count(), before);
}

// Verifies that a removed root is reported as gone, and that a rescan
// watches the tree made again in its place.
TEST_F(PanelWatcherTest, RemovedRootIsGoneUntilRescanned) {
  fs::remove_all(root_);
  auto c = collect();
  EXPECT_TRUE(c.root_gone);
  EXPECT_FALSE(c.overflow);
  EXPECT_FALSE(watcher_->has_root());
  EXPECT_EQ(watcher_->watch_count(), 0u);
  fs::create_directories(root_ / "data/users");
  EXPECT_TRUE(watcher_->rescan().empty());
  EXPECT_TRUE(watcher_->has_root());
  EXPECT_EQ(watcher_->watch_count(), 3u);
}

// Verifies that a root renamed away is gone, is not found while it is
// away, and is watched whole again (saves reported) once renamed back.
TEST_F(PanelWatcherTest, RootRenamedAwayAndBackIsWatchedAgain) {
  size_t before = watcher_->watch_count();
  fs::path away = tmp_.path() / "panel.moved";
  fs::rename(root_, away);
  EXPECT_TRUE(collect().root_gone);
  EXPECT_EQ(watcher_->watch_count(), 0u);
  EXPECT_TRUE(watcher_->rescan().empty());
  EXPECT_FALSE(watcher_->has_root());
  EXPECT_FALSE(watcher_->root_error().empty());

  fs::rename(away, root_);
  EXPECT_TRUE(watcher_->rescan().empty());
  EXPECT_TRUE(watcher_->has_root());
  EXPECT_TRUE(watcher_->root_error().empty());
  EXPECT_EQ(watcher_->watch_count(), before);
  save(mail("alice", "back.example.json"), "{}");
  auto c = collect();
  EXPECT_TRUE(c.paths.count(mail("alice", "back.example.json")));
  EXPECT_FALSE(c.root_gone);
}

// Verifies that a root replaced with no event about it (its parent was
// renamed, so the root's own watch saw nothing) is noticed by a rescan:
// the new tree is watched, the old one no longer reported.
TEST(PanelWatcher, RootReplacedUnseenIsWatchedAfresh) {
  testing::TestDir tmp;
  fs::path root = tmp.path() / "mnt/panel";
  fs::create_directories(root / "data/users/alice/mail");
  PanelWatcher watcher(root);
  EXPECT_TRUE(watcher.rescan().empty());
  size_t before = watcher.watch_count();

  fs::rename(tmp.path() / "mnt", tmp.path() / "old");
  fs::create_directories(root / "data/users/bob/mail");
  EXPECT_TRUE(watcher.rescan().empty());
  EXPECT_TRUE(watcher.has_root());
  EXPECT_EQ(watcher.watch_count(), before);  // alice's two, now bob's

  write_text(tmp.path() / "old/panel/data/users/alice/mail/x.json", "{}");
  write_text(root / "data/users/bob/mail/y.json", "{}");
  pollfd p{watcher.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  auto c = watcher.read_changes();
  EXPECT_TRUE(c.paths.count(root / "data/users/bob/mail/y.json"));
  EXPECT_FALSE(c.paths.count(root / "data/users/alice/mail/x.json"));
}

// Verifies that a panel root that does not exist yet is not a warning of
// each rescan, only a reason, and is watched once it appears.
TEST(PanelWatcher, MissingRootIsWatchedLater) {
  testing::TestDir tmp;
  PanelWatcher watcher(tmp.path() / "not-yet");
  EXPECT_TRUE(watcher.rescan().empty());
  EXPECT_EQ(watcher.watch_count(), 0u);
  EXPECT_FALSE(watcher.has_root());
  EXPECT_NE(watcher.root_error().find("No such file"), std::string::npos);
  fs::create_directories(tmp.path() / "not-yet/conf");
  EXPECT_TRUE(watcher.rescan().empty());
  EXPECT_TRUE(watcher.has_root());
  EXPECT_EQ(watcher.watch_count(), 2u);
}

// Verifies that a root that is a symbolic link is not followed: it is not
// watched, and says why.
TEST(PanelWatcher, SymlinkedRootIsNotWatched) {
  testing::TestDir tmp;
  fs::create_directories(tmp.path() / "real/data/users");
  fs::create_directory_symlink(tmp.path() / "real", tmp.path() / "panel");
  PanelWatcher watcher(tmp.path() / "panel");
  EXPECT_TRUE(watcher.rescan().empty());
  EXPECT_FALSE(watcher.has_root());
  EXPECT_EQ(watcher.root_error(), std::strerror(ENOTDIR));
  EXPECT_EQ(watcher.watch_count(), 0u);
}

}  // namespace
}  // namespace havenoro::daemon
