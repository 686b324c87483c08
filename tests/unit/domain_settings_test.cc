// Verifies the reading of domain, user and server settings files.

#include "havenoro_relay/panel/domain_settings.h"

#include <gtest/gtest.h>

namespace havenoro::panel {
namespace {

constexpr const char* kDomain = R"({
  "domain": "example.com",
  "suspended": false,
  "dkim": { "enabled": true, "selector": "mail" },
  "smtp_relay": {
    "enabled": true, "host": "smtp.sendgrid.net", "port": 587,
    "security": "auto", "username": "apikey",
    "password": "SG.example-secret", "verify_certificate": true
  },
  "quota_mb": 500
})";

// Verifies that the contract's example parses with every field.
TEST(DomainSettings, ParsesTheContractExample) {
  auto p = parse_domain_settings(kDomain, "example.com", {});
  ASSERT_FALSE(p.error) << p.error->message;
  EXPECT_EQ(p.value->domain, "example.com");
  EXPECT_TRUE(p.value->dkim_enabled);
  EXPECT_EQ(p.value->dkim_selector, "mail");
  ASSERT_TRUE(p.value->relay);
  EXPECT_EQ(p.value->relay->password, "SG.example-secret");
}

// Verifies that `domain` must equal the file name and be lowercase.
TEST(DomainSettings, DomainMustMatchTheFileName) {
  auto p = parse_domain_settings(kDomain, "example.org", {});
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error->field, "domain");
  auto upper =
      parse_domain_settings(R"({"domain":"Example.com"})", "Example.com", {});
  ASSERT_TRUE(upper.error);
  EXPECT_EQ(upper.error->field, "domain");
}

// Verifies that a half-written file is not a setting, and that the error
// does not quote the file (it holds a password).
TEST(DomainSettings, HalfWrittenFileIsRejectedWithoutQuotingIt) {
  std::string text(kDomain);
  text.resize(text.find("SG.example") + 5);
  auto p = parse_domain_settings(text, "example.com", {});
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error->field, "file");
  EXPECT_EQ(p.error->message.find("SG.ex"), std::string::npos);
}

// Verifies that a known key with the wrong type is an error naming it.
TEST(DomainSettings, WrongTypeNamesTheKey) {
  auto p = parse_domain_settings(R"({"domain":"example.com","suspended":"no"})",
                                 "example.com", {});
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error->field, "suspended");
  auto d = parse_domain_settings(
      R"({"domain":"example.com","dkim":{"selector":"a b"}})", "example.com",
      {});
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->field, "dkim.selector");
}

// Verifies internationalised names in their xn-- form.
TEST(DomainSettings, AcceptsPunycodeNames) {
  auto p = parse_domain_settings(R"({"domain":"xn--bcher-kva.example"})",
                                 "xn--bcher-kva.example", {});
  EXPECT_FALSE(p.error);
  EXPECT_FALSE(p.value->relay);
}

// Verifies user.json: the name must match its directory.
TEST(UserSettings, ParsesAndChecksTheName) {
  auto ok =
      parse_user_settings(R"({"user":"alice","suspended":true})", "alice");
  ASSERT_TRUE(ok.value);
  EXPECT_TRUE(ok.value->suspended);
  EXPECT_TRUE(parse_user_settings(R"({"user":"bob"})", "alice").error);
  EXPECT_TRUE(parse_user_settings("{", "alice").error);
}

// Verifies conf/mail.json: no relay, a relay, and a bad relay.
TEST(ServerSettings, ParsesTheServerWideRelay) {
  auto none = parse_server_settings("{}", {});
  ASSERT_TRUE(none.value);
  EXPECT_FALSE(*none.value);
  auto some = parse_server_settings(
      R"({"smtp_relay":{"enabled":true,"host":"relay.example.net"}})", {});
  ASSERT_TRUE(some.value && *some.value);
  EXPECT_EQ((*some.value)->port, 587);
  auto bad = parse_server_settings(
      R"({"smtp_relay":{"enabled":true,"host":"a b"}})", {});
  ASSERT_TRUE(bad.error);
  EXPECT_EQ(bad.error->field, "smtp_relay.host");
}

}  // namespace
}  // namespace havenoro::panel
