// Verifies how the panel tree is read: only regular files are settings.

#include "havenoro_relay/panel/panel_reader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "test_dir.h"

namespace havenoro::panel {
namespace {

namespace fs = std::filesystem;
using testing::write_text;

class PanelReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_text(mail_.parent_path() / "user.json", R"({"user":"alice"})");
    fs::create_directories(mail_);
  }
  DomainEntry read(const std::string& stem) {
    return read_domain(tmp_.path(), "alice", stem, {});
  }

  testing::TestDir tmp_;
  fs::path mail_ = tmp_.path() / "data/users/alice/mail";
};

// Verifies that a symlinked domain file is refused, not followed.
TEST_F(PanelReaderTest, SymlinkIsRefused) {
  write_text(tmp_.path() / "elsewhere.json", R"({"domain":"target.example"})");
  fs::create_symlink(tmp_.path() / "elsewhere.json",
                     mail_ / "link.example.json");
  auto e = read("link.example");
  ASSERT_TRUE(e.settings.error);
  EXPECT_EQ(e.settings.error->field, "link.example.json");
  EXPECT_NE(e.settings.error->message.find("symlink"), std::string::npos);
  EXPECT_EQ(e.settings.error->message.find("target.example"),
            std::string::npos);
}

// Verifies that a FIFO is refused at once instead of blocking the reader.
TEST_F(PanelReaderTest, FifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo((mail_ / "fifo.example.json").c_str(), 0600), 0);
  auto e = read("fifo.example");
  ASSERT_TRUE(e.settings.error);
  EXPECT_NE(e.settings.error->message.find("not a regular file"),
            std::string::npos);
}

// Verifies that a file far larger than any setting is not read.
TEST_F(PanelReaderTest, HugeFileIsRefused) {
  write_text(mail_ / "big.example.json", std::string(2 << 20, ' '));
  auto e = read("big.example");
  ASSERT_TRUE(e.settings.error);
  EXPECT_NE(e.settings.error->message.find("bytes"), std::string::npos);
}

// Verifies that a DKIM key given as a symlink is refused, so a root-only
// key elsewhere is never copied where Exim's group can read it.
TEST_F(PanelReaderTest, SymlinkedDkimKeyIsRefused) {
  write_text(mail_ / "dk.example.json",
             R"({"domain":"dk.example","dkim":{"enabled":true,)"
             R"("selector":"mail"}})");
  write_text(tmp_.path() / "secret.pem",
             "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n");
  fs::create_symlink(tmp_.path() / "secret.pem", mail_ / "dk.example.dkim.pem");
  auto e = read("dk.example");
  ASSERT_TRUE(e.settings.error);
  EXPECT_EQ(e.settings.error->field, "dkim.enabled");
}

// Verifies that a DKIM key is noted, not kept, and read back only while
// it is the text that was checked: a key replaced since, or one that
// became a symlink, reads as nothing.
TEST_F(PanelReaderTest, DkimKeyIsReadBackOnlyAsChecked) {
  write_text(mail_ / "dk.example.json",
             R"({"domain":"dk.example","dkim":{"enabled":true,)"
             R"("selector":"mail"}})");
  const std::string pem =
      "-----BEGIN PRIVATE KEY-----\nfirst\n-----END PRIVATE KEY-----\n";
  write_text(mail_ / "dk.example.dkim.pem", pem);
  auto e = read("dk.example");
  ASSERT_TRUE(e.settings.value);
  ASSERT_TRUE(e.settings.value->dkim_key);
  const auto& key = *e.settings.value->dkim_key;
  EXPECT_EQ(key.path, (mail_ / "dk.example.dkim.pem").string());
  EXPECT_EQ(read_key(key), pem);

  write_text(mail_ / "dk.example.dkim.pem",
             "-----BEGIN PRIVATE KEY-----\nnewer\n-----END PRIVATE KEY-----\n");
  EXPECT_EQ(read_key(key), std::nullopt);
  write_text(tmp_.path() / "same.pem", pem);
  fs::remove(mail_ / "dk.example.dkim.pem");
  fs::create_symlink(tmp_.path() / "same.pem", mail_ / "dk.example.dkim.pem");
  EXPECT_EQ(read_key(key), std::nullopt);
}

// Verifies that a missing user.json is reported as missing.
TEST_F(PanelReaderTest, MissingUserFileSaysSo) {
  auto u = read_user(tmp_.path(), "nobody");
  ASSERT_TRUE(u.settings.error);
  EXPECT_EQ(u.settings.error->field, "user.json");
  EXPECT_EQ(u.settings.error->message, "is missing");
}

}  // namespace
}  // namespace havenoro::panel
