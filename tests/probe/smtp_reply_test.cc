// Verifies how the probe reads SMTP replies and EHLO capabilities.

#include "havenoro_relay/probe/smtp_reply.h"

#include <gtest/gtest.h>

namespace havenoro::probe {
namespace {

using Status = SmtpReplyReader::Status;

// Verifies that a multi-line reply ends at the line with a space.
TEST(SmtpReplyReader, ReadsMultiLineReply) {
  SmtpReplyReader reader;
  EXPECT_EQ(reader.add("250-relay.test Hello"), Status::kMore);
  EXPECT_EQ(reader.add("250-STARTTLS"), Status::kMore);
  EXPECT_EQ(reader.add("250 AUTH PLAIN LOGIN"), Status::kDone);
  EXPECT_EQ(reader.reply().code, 250);
  EXPECT_EQ(reader.reply().lines,
            (std::vector<std::string>{"relay.test Hello", "STARTTLS",
                                      "AUTH PLAIN LOGIN"}));
  EXPECT_EQ(reader.reply().text(),
            "250 relay.test Hello / STARTTLS / AUTH PLAIN LOGIN");
}

// Verifies that a bare code is a whole reply (RFC 5321 allows no text).
TEST(SmtpReplyReader, AcceptsBareCode) {
  SmtpReplyReader reader;
  EXPECT_EQ(reader.add("221"), Status::kDone);
  EXPECT_EQ(reader.reply().text(), "221 ");
}

// Verifies that what is not a reply line is refused, not guessed at.
TEST(SmtpReplyReader, RefusesMalformedLines) {
  for (const char* line : {"", "22", "hello", "2x0 ok", "250_ok", "\x16\x03"}) {
    SmtpReplyReader reader;
    EXPECT_EQ(reader.add(line), Status::kMalformed) << line;
  }
}

// Verifies that a code changing in the middle of a reply is refused.
TEST(SmtpReplyReader, RefusesChangingCode) {
  SmtpReplyReader reader;
  EXPECT_EQ(reader.add("250-first"), Status::kMore);
  EXPECT_EQ(reader.add("251 second"), Status::kMalformed);
}

// Verifies that an endless multi-line reply is cut off.
TEST(SmtpReplyReader, RefusesEndlessReply) {
  SmtpReplyReader reader;
  Status status = Status::kMore;
  for (int i = 0; i < 1000 && status == Status::kMore; ++i)
    status = reader.add("250-again");
  EXPECT_EQ(status, Status::kMalformed);
}

// Verifies that capabilities leave out the greeting line.
TEST(EhloCapabilities, SkipsGreeting) {
  SmtpReply reply{250, {"relay.test", "SIZE 1000", "STARTTLS"}};
  EXPECT_EQ(ehlo_capabilities(reply),
            (std::vector<std::string>{"SIZE 1000", "STARTTLS"}));
  EXPECT_TRUE(ehlo_capabilities(SmtpReply{250, {"relay.test"}}).empty());
}

// Verifies that keywords match whole and regardless of case.
TEST(HasCapability, MatchesWholeKeywordIgnoringCase) {
  std::vector<std::string> caps = {"starttls", "SIZE 1000", "AUTH=LOGIN"};
  EXPECT_TRUE(has_capability(caps, "STARTTLS"));
  EXPECT_TRUE(has_capability(caps, "size"));
  EXPECT_TRUE(has_capability(caps, "AUTH"));
  EXPECT_FALSE(has_capability(caps, "START"));
}

// Verifies that both AUTH spellings are read, upper case, without repeats.
TEST(AuthMechanisms, ReadsBothSpellings) {
  std::vector<std::string> caps = {"AUTH login  Plain", "AUTH=LOGIN XOAUTH2",
                                   "AUTHX FOO", "SIZE 10"};
  EXPECT_EQ(auth_mechanisms(caps),
            (std::vector<std::string>{"LOGIN", "PLAIN", "XOAUTH2"}));
  EXPECT_TRUE(auth_mechanisms({"AUTH"}).empty());
}

// Verifies that PLAIN is preferred, LOGIN taken otherwise, others never.
TEST(ChooseMechanism, PrefersPlainThenLogin) {
  EXPECT_EQ(choose_mechanism({"LOGIN", "PLAIN"}), "PLAIN");
  EXPECT_EQ(choose_mechanism({"CRAM-MD5", "LOGIN"}), "LOGIN");
  EXPECT_EQ(choose_mechanism({"CRAM-MD5", "XOAUTH2"}), "");
  EXPECT_EQ(choose_mechanism({}), "");
}

}  // namespace
}  // namespace havenoro::probe
