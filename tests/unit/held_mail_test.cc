#include "havenoro_relay/apply/held_mail.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "test_dir.h"

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;
using testing::TestDir;
using testing::write_text;
using namespace std::chrono_literals;

const fs::path kSource = HAVENORO_SOURCE_DIR;

TEST(QueueMayHoldMailTest, NoInputDirectoryIsAnEmptyQueue) {
  TestDir spool;
  EXPECT_FALSE(queue_may_hold_mail(spool.path()));
}

// Verifies that a spool directory that is not there (moved to another
// disk, say) is no proof of an empty queue.
TEST(QueueMayHoldMailTest, AMissingSpoolDirectoryCountsAsMail) {
  TestDir dir;
  EXPECT_TRUE(queue_may_hold_mail(dir.path() / "gone"));
}

TEST(QueueMayHoldMailTest, OnlyHeaderFilesCountAsMail) {
  TestDir spool;
  fs::create_directories(spool.path() / "input");
  EXPECT_FALSE(queue_may_hold_mail(spool.path()));
  // A data file alone is a message being received or removed.
  write_text(spool.path() / "input/1tXyZa-000123-AB-D", "x");
  EXPECT_FALSE(queue_may_hold_mail(spool.path()));
  write_text(spool.path() / "input/1tXyZa-000123-AB-H", "x");
  EXPECT_TRUE(queue_may_hold_mail(spool.path()));
}

TEST(QueueMayHoldMailTest, FindsMailInASplitSpool) {
  TestDir spool;
  for (const char* sub : {"input/a", "input/B", "input/7"}) {
    fs::create_directories(spool.path() / sub);
  }
  EXPECT_FALSE(queue_may_hold_mail(spool.path()));
  write_text(spool.path() / "input/7/1tXyZ7-000123-AB-H", "x");
  EXPECT_TRUE(queue_may_hold_mail(spool.path()));
}

TEST(QueueMayHoldMailTest, WhatCannotBeLookedThroughCountsAsMail) {
  TestDir spool;
  fs::create_directories(spool.path() / "real");
  // An empty directory, but behind a symlink, which is not followed.
  fs::create_directory_symlink(spool.path() / "real", spool.path() / "input");
  EXPECT_TRUE(queue_may_hold_mail(spool.path()));
}

std::optional<fs::path> spool_of(const config::DaemonConfig& c) {
  return exim_spool_directory(c.exim_binary, c.exim_config);
}

// Whether a process runs with `text` in its command line.
bool running_with(const std::string& text) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string cmdline = testing::read_text(entry.path() / "cmdline");
    if (cmdline.find(text) != std::string::npos) return true;
  }
  return false;
}

class EximSpoolTest : public ::testing::Test {
 protected:
  // The queue runs a test started write into its spool: they end before
  // the directory is removed.
  void TearDown() override {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (running_with(dir_.path().string()) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
  }
  config::DaemonConfig config(const std::string& extra) {
    config::DaemonConfig c;
    c.exim_config = dir_.path() / "exim.conf";
    write_text(c.exim_config,
               extra + "\n" +
                   testing::example_exim_config(kSource, dir_.path() / "out"));
    return c;
  }
  TestDir dir_;
};

TEST_F(EximSpoolTest, ReadsTheSpoolDirectoryFromExim) {
  auto spool =
      spool_of(config("spool_directory = " + (dir_.path() / "spool").string()));
  ASSERT_TRUE(spool);
  EXPECT_EQ(*spool, dir_.path() / "spool");
}

TEST_F(EximSpoolTest, TakesTheExpandedSpoolDirectory) {
  auto spool = spool_of(config("spool_directory = " + dir_.path().string() +
                               "/$primary_hostname"));
  ASSERT_TRUE(spool);
  EXPECT_EQ(*spool, dir_.path() / "mail.havenoro.test");
}

TEST_F(EximSpoolTest, AConfigurationEximRefusesGivesNothing) {
  EXPECT_FALSE(spool_of(config("no_such_option = 1")));
}

// Verifies that the spool directory is looked up again once Exim's
// configuration changes: a spool moved to a bigger disk is where queued
// mail is looked for from then on.
TEST_F(EximSpoolTest, AMovedSpoolIsFollowed) {
  fs::path empty = dir_.path() / "spool-a";
  fs::path full = dir_.path() / "spool-b";
  fs::create_directories(empty / "input");
  write_text(full / "input/1tXyZa-000123-AB-H", "x");
  HeldMailRetry retry(config("spool_directory = " + empty.string()));
  EXPECT_EQ(retry.retry({"a.example"}, false), 0);
  config("spool_directory = " + full.string() + "\n# moved");
  EXPECT_EQ(retry.retry({"a.example"}, false), 1);
  EXPECT_EQ(retry.retry({}, true), 1);
  EXPECT_EQ(retry.retry({}, false), 0);
}

}  // namespace
}  // namespace havenoro::apply
