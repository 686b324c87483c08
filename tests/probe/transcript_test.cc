// Verifies that the transcript and the redactor never show a credential.

#include "havenoro_relay/probe/transcript.h"

#include <gtest/gtest.h>

namespace havenoro::probe {
namespace {

constexpr const char* kPassword = "s3cr^t pass:word";
// base64 of the password, and of "\0apikey\0" + password (AUTH PLAIN).
constexpr const char* kPasswordBase64 = "czNjcl50IHBhc3M6d29yZA==";
constexpr const char* kPlainBase64 = "AGFwaWtleQBzM2NyXnQgcGFzczp3b3Jk";

Redactor credentials() {
  Redactor r;
  r.add_credentials("apikey", kPassword);
  return r;
}

// Verifies that the password is hidden raw and in both base64 forms.
TEST(Redactor, HidesPasswordInEveryForm) {
  Redactor r = credentials();
  EXPECT_EQ(r.redact(std::string("535 bad ") + kPassword),
            "535 bad <redacted>");
  EXPECT_EQ(r.redact(std::string("x ") + kPasswordBase64 + " y"),
            "x <redacted> y");
  EXPECT_EQ(r.redact(std::string("AUTH PLAIN ") + kPlainBase64),
            "AUTH PLAIN <redacted>");
}

// Verifies that every occurrence goes, not only the first.
TEST(Redactor, HidesEveryOccurrence) {
  Redactor r;
  r.add_secret("ab");
  EXPECT_EQ(r.redact("ab-ab-aab"), "<redacted>-<redacted>-a<redacted>");
}

// Verifies that an empty secret matches nothing (and does not loop).
TEST(Redactor, IgnoresEmptySecret) {
  Redactor r;
  r.add_secret("");
  r.add_credentials("", "");
  EXPECT_EQ(r.redact("text"), "text");
}

// Verifies that a secret outside ASCII is hidden before escaping, so
// that its escaped form does not show either.
TEST(Redactor, HidesNonAsciiSecretBeforeEscaping) {
  Redactor r;
  r.add_secret("p\xC3\xA4ss");
  EXPECT_EQ(r.clean("echo p\xC3\xA4ss \x01"), "echo <redacted> \\x01");
}

// Verifies that bytes outside printable ASCII are escaped.
TEST(Printable, EscapesControlAndHighBytes) {
  EXPECT_EQ(printable("ok\r\n\xff"), "ok\\x0D\\x0A\\xFF");
  EXPECT_EQ(printable("plain text"), "plain text");
}

// Verifies the line prefixes and that credential lines show as redacted.
TEST(Transcript, MarksDirectionAndRedactsCredentialLines) {
  Transcript t(credentials());
  t.client("EHLO probe.test");
  t.server("250 AUTH PLAIN LOGIN");
  t.client_redacted("AUTH PLAIN ");
  t.client_redacted("");
  t.note("TLS started");
  EXPECT_EQ(t.lines(),
            (std::vector<std::string>{
                "C: EHLO probe.test", "S: 250 AUTH PLAIN LOGIN",
                "C: AUTH PLAIN <redacted>", "C: <redacted>", "* TLS started"}));
}

// Verifies that a relay echoing the password does not put it on record.
TEST(Transcript, RedactsEchoedPassword) {
  Transcript t(credentials());
  t.server(std::string("535 wrong password ") + kPasswordBase64);
  EXPECT_EQ(t.lines().at(0), "S: 535 wrong password <redacted>");
}

}  // namespace
}  // namespace havenoro::probe
