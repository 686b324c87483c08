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

}  // namespace havenoro::testing
