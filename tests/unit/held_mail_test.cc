#include "havenoro_relay/apply/held_mail.h"

#include <gtest/gtest.h>

#include "test_dir.h"

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;
using testing::TestDir;
using testing::write_text;

const fs::path kSource = HAVENORO_SOURCE_DIR;

TEST(QueueMayHoldMailTest, NoInputDirectoryIsAnEmptyQueue) {
  TestDir spool;
  EXPECT_FALSE(queue_may_hold_mail(spool.path()));
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

class EximSpoolTest : public ::testing::Test {
 protected:
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
  auto spool = exim_spool_directory(
      config("spool_directory = " + (dir_.path() / "spool").string()));
  ASSERT_TRUE(spool);
  EXPECT_EQ(*spool, dir_.path() / "spool");
}

TEST_F(EximSpoolTest, TakesTheExpandedSpoolDirectory) {
  auto spool = exim_spool_directory(config(
      "spool_directory = " + dir_.path().string() + "/$primary_hostname"));
  ASSERT_TRUE(spool);
  EXPECT_EQ(*spool, dir_.path() / "mail.havenoro.test");
}

TEST_F(EximSpoolTest, AConfigurationEximRefusesGivesNothing) {
  EXPECT_FALSE(exim_spool_directory(config("no_such_option = 1")));
}

}  // namespace
}  // namespace havenoro::apply
