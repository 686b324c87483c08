#include "test_certs.h"

#include <stdlib.h>

#include <fstream>
#include <stdexcept>

#include "havenoro_relay/util/process.h"

namespace havenoro::probe::testing {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::seconds kOpensslTimeout{30};

void openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "/usr/bin/openssl");
  auto result = util::run_process(args, "", kOpensslTimeout);
  if (result.exit_code != 0)
    throw std::runtime_error("openssl " + args.at(1) + ": " + result.err);
}

// P-256 keys: as good as RSA for the test and much faster to make.
void make_key_and_request(const fs::path& key, const fs::path& request,
                          const std::string& subject) {
  openssl({"req", "-new", "-newkey", "ec", "-pkeyopt",
           "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out",
           request, "-subj", subject});
}

void sign(const TestCerts& c, const fs::path& request, const fs::path& cert,
          const std::string& san, const std::string& serial) {
  fs::path ext = c.dir / (serial + ".ext");
  std::ofstream(ext) << "subjectAltName=" << san << "\n"
                     << "basicConstraints=CA:FALSE\n"
                     << "extendedKeyUsage=serverAuth\n";
  openssl({"x509", "-req", "-in", request, "-CA", c.ca, "-CAkey",
           c.dir / "ca.key", "-set_serial", serial, "-days", "2", "-out", cert,
           "-extfile", ext});
}

TestCerts make_certs() {
  char name[] = "/tmp/havenoro-probe-certs-XXXXXX";
  if (!::mkdtemp(name)) throw std::runtime_error("mkdtemp failed");
  TestCerts c;
  c.dir = name;
  fs::permissions(c.dir, fs::perms(0755));
  c.ca = c.dir / "ca.pem";
  openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt",
           "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
           c.dir / "ca.key", "-out", c.ca, "-days", "2", "-subj",
           "/CN=Havenoro Probe Test CA"});

  c.localhost_cert = c.dir / "localhost.pem";
  c.localhost_key = c.dir / "localhost.key";
  make_key_and_request(c.localhost_key, c.dir / "localhost.csr",
                       "/CN=localhost");
  sign(c, c.dir / "localhost.csr", c.localhost_cert,
       "DNS:localhost,IP:127.0.0.1", "2");

  c.other_cert = c.dir / "other.pem";
  c.other_key = c.dir / "other.key";
  make_key_and_request(c.other_key, c.dir / "other.csr", "/CN=other.test");
  sign(c, c.dir / "other.csr", c.other_cert, "DNS:other.test", "3");
  return c;
}

// Removes the directory when the test binary exits.
struct OwnedCerts {
  TestCerts certs = make_certs();
  ~OwnedCerts() {
    std::error_code ignored;
    fs::remove_all(certs.dir, ignored);
  }
};

}  // namespace

const TestCerts& test_certs() {
  static OwnedCerts owned;
  return owned.certs;
}

}  // namespace havenoro::probe::testing
