#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace havenoro::testing {

/// A fresh directory under /tmp, removed with everything in it at the end.
/// Traversable by everyone, since Exim's own user reads below it.
class TestDir {
 public:
  TestDir() {
    char name[] = "/tmp/havenoro-test-XXXXXX";
    path_ = ::mkdtemp(name);
    std::filesystem::permissions(path_, std::filesystem::perms(0755));
  }
  ~TestDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text(const std::filesystem::path& p, const std::string& t) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << t;
}

/// The example Exim main configuration of `source` with its output
/// directory at `out`, for a test's Exim. A fixed host name spares every
/// Exim process a DNS lookup of this host, and "localhost" is not asked
/// of DNS for an IPv6 address (an /etc/hosts without ::1 would send that
/// query to the machine's resolver).
inline std::string example_exim_config(const std::filesystem::path& source,
                                       const std::filesystem::path& out) {
  std::string conf = read_text(source / "exim-templates/exim4.conf.example");
  const std::string from = "/etc/exim4/havenoro-relay";
  for (size_t at = conf.find(from); at != std::string::npos;
       at = conf.find(from, at)) {
    conf.replace(at, from.size(), out.string());
  }
  return "primary_hostname = mail.havenoro.test\n"
         "dns_ipv4_lookup = localhost\n" +
         conf;
}

}  // namespace havenoro::testing
