// Verifies the credential file writer: what Exim's lsearch reads back.

#include "havenoro_relay/render/credential_file.h"

#include <gtest/gtest.h>

namespace havenoro::render {
namespace {

panel::RelaySettings relay() {
  panel::RelaySettings r;
  r.host = "smtp.sendgrid.net";
  r.port = 587;
  r.username = "apikey";
  r.password = " lead";
  return r;
}

// Verifies standard base64 against RFC 4648's test vectors.
TEST(CredentialFile, Base64MatchesRfc4648) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode("\xff\xfe"), "//4=");
}

// Verifies that the leading space of a password survives (lsearch would
// trim a raw value).
TEST(CredentialFile, KeepsLeadingSpacesOfPassword) {
  auto text = render_credential_file("example.com", relay());
  EXPECT_NE(text.find("password: IGxlYWQ=\n"), std::string::npos);
  EXPECT_EQ(text.find(" lead"), std::string::npos);
}

// Verifies the whole file for a STARTTLS relay.
TEST(CredentialFile, RendersStarttlsRelay) {
  EXPECT_EQ(render_credential_file("example.com", relay()),
            "# havenoro-relayd: relay of example.com; managed file, edits "
            "are overwritten\n"
            "route: smtp.sendgrid.net:587\n"
            "transport: havenoro_relay_smtp\n"
            "tls: required\n"
            "verify: yes\n"
            "auth: yes\n"
            "username: YXBpa2V5\n"
            "password: IGxlYWQ=\n");
}

// Verifies port 465, "none", no credentials and no verification.
TEST(CredentialFile, RendersModesAndFlags) {
  auto r = relay();
  r.port = 465;
  EXPECT_NE(render_credential_file("d", r).find("havenoro_relay_smtps"),
            std::string::npos);
  r.port = 25;
  r.security = panel::Security::kNone;
  r.username.clear();
  r.password.clear();
  r.verify_certificate = false;
  auto text = render_credential_file("d", r);
  EXPECT_NE(text.find("transport: havenoro_relay_smtp\n"), std::string::npos);
  EXPECT_NE(text.find("tls: none\n"), std::string::npos);
  EXPECT_NE(text.find("auth: no\n"), std::string::npos);
  EXPECT_NE(text.find("verify: no\n"), std::string::npos);
}

// Verifies that an IPv6 relay is bracketed so its colons are not read as
// the port separator.
TEST(CredentialFile, BracketsIpv6Routes) {
  auto r = relay();
  r.host = "2001:db8::25";
  EXPECT_EQ(route_of(r), "[2001:db8::25]:587");
  r.host = "192.0.2.1";
  EXPECT_EQ(route_of(r), "192.0.2.1:587");
}

}  // namespace
}  // namespace havenoro::render
