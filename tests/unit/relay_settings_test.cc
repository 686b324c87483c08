// Verifies the checks on one `smtp_relay` object (field cases F08, F09,
// F12, F13).

#include "havenoro_relay/panel/relay_settings.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace havenoro::panel {
namespace {

using nlohmann::json;

json relay(json overrides = json::object()) {
  json r = {{"enabled", true},
            {"host", "smtp.example.net"},
            {"port", 587},
            {"username", "apikey"},
            {"password", "secret"}};
  for (auto& [k, v] : overrides.items()) r[k] = v;
  return r;
}

RelayParse parse(const json& j, bool allow_private = false) {
  return parse_relay(&j, RelayRules{allow_private});
}

std::string error_field(const json& j) {
  auto r = parse(j);
  return r.error ? r.error->field : "";
}

// Verifies that every password of field case F08 is kept byte for byte.
TEST(RelaySettings, F08_KeepsEveryPasswordByteForByte) {
  for (const std::string& pw : std::vector<std::string>{
           "p^ss", "^lead", "a:b::c", "#hash", "{x}", "q\"uote", "it's",
           "back\\slash", "$HOME", "${run{/bin/true}}", " lead", "trail ",
           "p\xc3\xa4sswörd", std::string(200, 'x')}) {
    auto r = parse(relay({{"password", pw}}));
    ASSERT_FALSE(r.error) << pw << ": " << r.error->message;
    EXPECT_EQ(r.relay->password, pw);
  }
}

// Verifies that real-world usernames pass (F09).
TEST(RelaySettings, F09_AcceptsRealUsernames) {
  for (std::string user : {"acme/main", "DOM\\user", "user@example.com"}) {
    auto r = parse(relay({{"username", user}}));
    ASSERT_FALSE(r.error) << user;
    EXPECT_EQ(r.relay->username, user);
  }
}

// Verifies that what the files cannot hold is refused, naming the field,
// and that the message never quotes the secret (F09, F10).
TEST(RelaySettings, F09_RejectsLineBreaksAndNulNamingTheField) {
  for (const std::string& bad :
       std::vector<std::string>{"a\rb", "a\nb", std::string("a\0b", 3)}) {
    for (const char* key : {"username", "password"}) {
      auto r = parse(relay({{key, bad}}));
      ASSERT_TRUE(r.error);
      EXPECT_EQ(r.error->field, std::string("smtp_relay.") + key);
      EXPECT_EQ(r.error->message.find(bad), std::string::npos);
    }
  }
}

// Verifies the port rules: range, type, and 587 when absent (F09, F13).
TEST(RelaySettings, F13_PortRangeAndDefault) {
  EXPECT_EQ(error_field(relay({{"port", 0}})), "smtp_relay.port");
  EXPECT_EQ(error_field(relay({{"port", 70000}})), "smtp_relay.port");
  EXPECT_EQ(error_field(relay({{"port", "587"}})), "smtp_relay.port");
  auto r = parse(relay({{"port", 70000}}));
  EXPECT_EQ(r.error->message, "70000 is out of range 1-65535");

  json no_port = relay();
  no_port.erase("port");
  EXPECT_EQ(parse(no_port).relay->port, 587);
}

// Verifies that port 25 is accepted with a warning (F13).
TEST(RelaySettings, F13_Port25IsAcceptedWithAWarning) {
  auto r = parse(relay({{"port", 25}}));
  ASSERT_TRUE(r.relay);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("25"), std::string::npos);
}

// Verifies that a relay without "enabled" is off, with a warning naming
// the field, and that "enabled": false says nothing.
TEST(RelaySettings, MissingEnabledIsOffWithAWarning) {
  json j = relay();
  j.erase("enabled");
  auto r = parse(j);
  EXPECT_FALSE(r.relay);
  EXPECT_FALSE(r.error);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0].rfind("smtp_relay.enabled:", 0), 0u);
  EXPECT_TRUE(parse(relay({{"enabled", false}})).warnings.empty());
  EXPECT_EQ(r.warnings[0].find("secret"), std::string::npos);
}

// Verifies host checks: names, IPv4 and bare IPv6 pass; spaces and
// slashes do not (F09).
TEST(RelaySettings, F09_HostChecks) {
  for (std::string ok : {"smtp.sendgrid.net",
                         "email-smtp.eu-west-1."
                         "amazonaws.com",
                         "192.0.2.10", "2001:db8::25"}) {
    EXPECT_FALSE(parse(relay({{"host", ok}})).error) << ok;
  }
  for (std::string bad : {"smtp example.net", "smtp/example.net", "", "-a.b",
                          "a..b", "[2001:db8::25]"}) {
    EXPECT_EQ(error_field(relay({{"host", bad}})), "smtp_relay.host") << bad;
  }
}

// Verifies that loopback and private relays need the admin's consent (F12).
TEST(RelaySettings, F12_PrivateAddressesOnlyWhenAllowed) {
  for (std::string host : {"127.0.0.1", "10.0.0.5", "192.168.1.2", "172.16.0.1",
                           "::1", "fd00::1"}) {
    auto refused = parse(relay({{"host", host}}));
    ASSERT_TRUE(refused.error) << host;
    EXPECT_NE(refused.error->message.find("allow_private_relays"),
              std::string::npos);
    EXPECT_FALSE(parse(relay({{"host", host}}), true).error) << host;
  }
  EXPECT_FALSE(parse(relay({{"host", "192.0.2.1"}})).error);
}

// Verifies how `security` and the port choose TLS from the first byte.
TEST(RelaySettings, F05_SecurityModes) {
  EXPECT_TRUE(parse(relay({{"port", 465}})).relay->implicit_tls());
  EXPECT_FALSE(parse(relay({{"port", 587}})).relay->implicit_tls());
  EXPECT_TRUE(parse(relay({{"port", 2465}, {"security", "tls"}}))
                  .relay->implicit_tls());
  EXPECT_FALSE(parse(relay({{"port", 465}, {"security", "starttls"}}))
                   .relay->implicit_tls());
  auto none = parse(relay({{"security", "none"}}));
  EXPECT_FALSE(none.relay->requires_tls());
  EXPECT_EQ(error_field(relay({{"security", "ssl"}})), "smtp_relay.security");
}

// Verifies that username and password go together, and that a relay
// without either authenticates by address.
TEST(RelaySettings, CredentialsGoTogether) {
  EXPECT_EQ(error_field(relay({{"password", ""}})), "smtp_relay.password");
  EXPECT_EQ(error_field(relay({{"username", ""}})), "smtp_relay.username");
  json by_ip = relay();
  by_ip.erase("username");
  by_ip.erase("password");
  auto r = parse(by_ip);
  ASSERT_TRUE(r.relay);
  EXPECT_FALSE(r.relay->authenticates());
}

// Verifies that a disabled or absent relay is no relay, whatever else the
// object holds, and that unknown keys are ignored.
TEST(RelaySettings, DisabledRelayIsNoRelay) {
  EXPECT_FALSE(parse(relay({{"enabled", false}, {"port", 0}})).relay);
  EXPECT_FALSE(parse_relay(nullptr, {}).relay);
  EXPECT_TRUE(parse(relay({{"future_key", 1}})).relay);
  EXPECT_EQ(error_field(relay({{"enabled", "yes"}})), "smtp_relay.enabled");
  EXPECT_EQ(error_field(relay({{"verify_certificate", 1}})),
            "smtp_relay.verify_certificate");
}

// Verifies that invalid UTF-8 is refused rather than altered.
TEST(RelaySettings, RejectsInvalidUtf8) {
  EXPECT_TRUE(check_secret_text("\xc3"));
  EXPECT_TRUE(check_secret_text("\xff\xfe"));
  EXPECT_FALSE(check_secret_text("\xe2\x82\xac"));
}

}  // namespace
}  // namespace havenoro::panel
