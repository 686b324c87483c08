// Verifies the output directory's writes: atomic, owned, never redirected.

#include "havenoro_relay/apply/output_dir.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>

#include "havenoro_relay/apply/live_files.h"
#include "havenoro_relay/util/group.h"
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
  gid_t group_ = util::group_id("Debian-exim");
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
  fs::permissions(tmp_.path() / "real", fs::perms(0700));
  fs::create_directory_symlink(tmp_.path() / "real", root_);
  EXPECT_THROW(OutputDir(root_, group_), std::system_error);
  // Nothing is repaired through the link either.
  struct stat st;
  ASSERT_EQ(::stat((tmp_.path() / "real").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(st.st_gid, 0u);
}

// True when Exim's delivery user (Debian-exim) can open `path` for
// reading: a child process takes that user's ids and tries.
bool exim_user_can_read(const fs::path& path) {
  struct passwd* pw = ::getpwnam("Debian-exim");
  if (!pw) return false;
  uid_t uid = pw->pw_uid;
  gid_t gid = pw->pw_gid;
  pid_t child = ::fork();
  if (child == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 ||
        ::setuid(uid) != 0) {
      ::_exit(2);
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ::_exit(fd >= 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Log lines written while it lives, instead of the default logger's.
class CapturedLog {
 public:
  CapturedLog()
      : saved_(spdlog::default_logger()),
        sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(lines_)) {
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("captured", sink_));
    spdlog::default_logger()->set_pattern("%l %v");
  }
  ~CapturedLog() { spdlog::set_default_logger(saved_); }
  std::string text() const { return lines_.str(); }

 private:
  std::ostringstream lines_;
  std::shared_ptr<spdlog::logger> saved_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

size_t count_of(const std::string& text, const std::string& word) {
  size_t n = 0;
  for (size_t at = text.find(word); at != std::string::npos;
       at = text.find(word, at + 1)) {
    ++n;
  }
  return n;
}

// Verifies that an output directory made by someone else as root:root
// 0700 (what `mkdir -m 0700` or a unit's pre-step leaves) is set to
// root:Debian-exim 0750, so that Exim's delivery user reads the credential
// files again, and that the repair is logged once, not at every use.
TEST_F(OutputDirTest, ExistingRootWithWrongOwnerIsRepaired) {
  ASSERT_EQ(::mkdir(root_.c_str(), 0700), 0);
  ASSERT_EQ(::chown(root_.c_str(), 0, 0), 0);
  testing::write_text(root_ / "probe", "x\n");
  ::chown((root_ / "probe").c_str(), 0, group_);
  ::chmod((root_ / "probe").c_str(), 0640);
  ASSERT_FALSE(exim_user_can_read(root_ / "probe"));

  CapturedLog log;
  OutputDir out(root_, group_);
  struct stat st;
  ASSERT_EQ(::stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, group_);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  out.commit({out.stage("domains/a.example/smtp_relay.conf", "x: 1\n", 0640)});
  EXPECT_TRUE(exim_user_can_read(root_ / "domains/a.example/smtp_relay.conf"));

  OutputDir again(root_, group_);
  std::string lines = log.text();
  EXPECT_EQ(count_of(lines, "output_dir.repaired"), 1u) << lines;
  EXPECT_NE(lines.find("warning output_dir.repaired path=" + root_.string() +
                       " uid=0 gid=0 mode=0700 new_gid=" +
                       std::to_string(group_) + " new_mode=0750"),
            std::string::npos)
      << lines;
}

// Verifies that a directory the daemon creates itself gets 0750 whatever
// the umask, and that creating it is not reported as a repair.
TEST_F(OutputDirTest, CreatedRootIsSetWhateverTheUmask) {
  CapturedLog log;
  mode_t saved = ::umask(077);
  OutputDir out(root_, group_);
  ::umask(saved);
  struct stat st;
  ASSERT_EQ(::stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, group_);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(log.text(), "");
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
