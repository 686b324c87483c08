// Verifies the output directory's writes: atomic, owned, never redirected.

#include "havenoro_relay/apply/output_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "havenoro_relay/apply/live_files.h"
#include "test_dir.h"

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::TestDir;

class OutputDirTest : public ::testing::Test {
 protected:
  TestDir tmp_;
  fs::path root_ = tmp_.path() / "out";
  gid_t group_ = group_id("Debian-exim");
};

// Verifies that a committed file has its content, mode 0640 and owner
// root:Debian-exim, and that nothing is visible before the commit.
TEST_F(OutputDirTest, CommittedFileHasModeAndOwner) {
  OutputDir out(root_, group_);
  auto staged =
      out.stage("domains/example.com/smtp_relay.conf", "x: 1\n", 0640);
  EXPECT_FALSE(fs::exists(root_ / "domains/example.com/smtp_relay.conf"));
  out.commit({staged});

  struct stat st;
  ASSERT_EQ(
      ::stat((root_ / "domains/example.com/smtp_relay.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, group_);
  EXPECT_EQ(read_text(root_ / "domains/example.com/smtp_relay.conf"), "x: 1\n");
  EXPECT_TRUE(
      out.matches("domains/example.com/smtp_relay.conf", "x: 1\n", 0640));
  EXPECT_FALSE(
      out.matches("domains/example.com/smtp_relay.conf", "x: 2\n", 0640));
  EXPECT_FALSE(
      out.matches("domains/example.com/smtp_relay.conf", "x: 1\n", 0644));
  EXPECT_EQ(out.list("domains/example.com"),
            std::vector<std::string>{"smtp_relay.conf"});
}

// Verifies that a symlink planted as a directory is refused, not followed.
TEST_F(OutputDirTest, PlantedDirectorySymlinkIsRefused) {
  OutputDir out(root_, group_);
  fs::create_directories(tmp_.path() / "elsewhere");
  fs::create_directories(root_ / "domains");
  fs::create_directory_symlink(tmp_.path() / "elsewhere",
                               root_ / "domains" / "evil.example");
  EXPECT_THROW(out.stage("domains/evil.example/smtp_relay.conf", "x", 0640),
               std::system_error);
  EXPECT_TRUE(fs::is_empty(tmp_.path() / "elsewhere"));
}

// Verifies that a symlink planted as a file never matches, cannot be read
// through, and is replaced by a real file rather than written through.
TEST_F(OutputDirTest, PlantedFileSymlinkIsReplacedNotFollowed) {
  OutputDir out(root_, group_);
  testing::write_text(tmp_.path() / "victim", "keep\n");
  fs::create_directories(root_ / "default");
  fs::create_symlink(tmp_.path() / "victim",
                     root_ / "default" / "smtp_relay.conf");
  EXPECT_FALSE(out.matches("default/smtp_relay.conf", "keep\n", 0640));
  EXPECT_THROW(out.read("default/smtp_relay.conf"), std::system_error);
  out.commit({out.stage("default/smtp_relay.conf", "new\n", 0640)});
  EXPECT_EQ(read_text(tmp_.path() / "victim"), "keep\n");
  EXPECT_FALSE(fs::is_symlink(root_ / "default" / "smtp_relay.conf"));
}

// Verifies that the root itself may not be a symlink.
TEST_F(OutputDirTest, RootSymlinkIsRefused) {
  fs::create_directories(tmp_.path() / "real");
  fs::create_directory_symlink(tmp_.path() / "real", root_);
  EXPECT_THROW(OutputDir(root_, group_), std::system_error);
}

// Verifies the link switch and removal of whole directories.
TEST_F(OutputDirTest, ReplacesLinksAndRemovesTrees) {
  OutputDir out(root_, group_);
  out.replace_link("current", "generations/1");
  out.replace_link("current", "generations/2");
  EXPECT_EQ(out.read_link("current"), "generations/2");
  out.commit({out.stage("a/b/c", "x", 0640)});
  out.remove_all("a");
  EXPECT_FALSE(fs::exists(root_ / "a"));
  out.remove_all("missing");
}

// Verifies that a discarded write leaves no temporary behind.
TEST_F(OutputDirTest, DiscardRemovesTemporaries) {
  OutputDir out(root_, group_);
  auto staged = out.stage("d/f", "x", 0640);
  out.discard({staged});
  EXPECT_TRUE(fs::is_empty(root_ / "d"));
}

// Verifies that write_new creates a file once, owned and with its mode,
// and refuses to write over anything already there.
TEST_F(OutputDirTest, WriteNewCreatesOnce) {
  OutputDir out(root_, group_);
  out.write_new(".check/domains/a.example/smtp_relay.conf", "x: 1\n", 0640);
  EXPECT_TRUE(
      out.matches(".check/domains/a.example/smtp_relay.conf", "x: 1\n", 0640));
  EXPECT_THROW(
      out.write_new(".check/domains/a.example/smtp_relay.conf", "x: 2\n", 0640),
      std::system_error);
  out.make_durable(
      {".check/domains/a.example/smtp_relay.conf", ".check/domains/a.example"});
  EXPECT_THROW(out.make_durable({".check/missing"}), std::system_error);
}

// Verifies that a directory handle kept by the output directory follows a
// rename and a removal: the old name is not written through afterwards.
TEST_F(OutputDirTest, KeptHandlesFollowRenamesAndRemovals) {
  OutputDir out(root_, group_);
  out.write_new("domains/.new-a/f", "1", 0640);
  out.rename("domains/.new-a", "domains/a");
  out.write_new("domains/.new-a/g", "2", 0640);  // a new directory
  EXPECT_EQ(out.list("domains/a"), std::vector<std::string>{"f"});
  EXPECT_EQ(out.list("domains/.new-a"), std::vector<std::string>{"g"});
  out.remove_all("domains/a");
  out.write_new("domains/a/h", "3", 0640);
  EXPECT_EQ(out.list("domains/a"), std::vector<std::string>{"h"});
}

// Verifies that LiveFiles answers from a file's stamp when it can, and
// from its content when the file changed: a rewrite with other content
// is seen, a rewrite with the same content is still the same.
TEST_F(OutputDirTest, LiveFilesSeeEveryChange) {
  OutputDir out(root_, group_);
  const std::string path = "domains/a.example/smtp_relay.conf";
  out.commit({out.stage(path, "x: 1\n", 0640)});
  LiveFiles seen;
  seen.wrote(out, path, "x: 1\n");
  EXPECT_TRUE(seen.same(out, path, "x: 1\n", 0640));
  EXPECT_FALSE(seen.same(out, path, "x: 2\n", 0640));

  out.commit({out.stage(path, "x: 9\n", 0640)});  // behind its back
  EXPECT_FALSE(seen.same(out, path, "x: 1\n", 0640));
  out.commit({out.stage(path, "x: 1\n", 0640)});
  EXPECT_TRUE(seen.same(out, path, "x: 1\n", 0640));
  ASSERT_EQ(::chmod((root_ / path).c_str(), 0644), 0);
  EXPECT_FALSE(seen.same(out, path, "x: 1\n", 0640));

  seen.prefetch(out);  // stamps taken now serve the next answers
  EXPECT_FALSE(seen.same(out, path, "x: 1\n", 0640));
  seen.end_prefetch();
  seen.forget(path);
  EXPECT_EQ(seen.size(), 0u);
}

}  // namespace
}  // namespace havenoro::apply
