#include "havenoro_relay/util/process.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "test_dir.h"

namespace havenoro::util {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A descriptor opened without O_CLOEXEC, as Boost.Asio opens its sockets,
// at a number no shell uses of its own.
class LeakyDescriptor {
 public:
  static constexpr int kNumber = 57;
  LeakyDescriptor() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    EXPECT_EQ(::dup2(fds[0], kNumber), kNumber);
    ::close(fds[0]);
    write_end_ = fds[1];
  }
  ~LeakyDescriptor() {
    ::close(kNumber);
    ::close(write_end_);
  }

 private:
  int write_end_ = -1;
};

const std::string kProbe =
    "if [ -e /proc/self/fd/57 ]; then echo open; else echo closed; fi";

// Verifies that a check's process gets its standard streams only.
TEST(ProcessTest, AChildInheritsNoOtherDescriptor) {
  LeakyDescriptor leaky;
  auto result = run_process({"/bin/sh", "-c", kProbe}, "", 10s);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "closed\n");
}

// Verifies the same of a detached one (a queue run, an Exim daemon): it
// could keep the control socket alive after the daemon is gone.
TEST(ProcessTest, ADetachedChildInheritsNoOtherDescriptor) {
  testing::TestDir dir;
  fs::path out = dir.path() / "out";
  LeakyDescriptor leaky;
  ASSERT_GT(spawn_detached({"/bin/sh", "-c", kProbe + " > " + out.string()}),
            0);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (testing::read_text(out).empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(testing::read_text(out), "closed\n");
}

// Verifies that a program that is not there gives -1, not an exception.
TEST(ProcessTest, ADetachedChildThatCannotStartGivesMinusOne) {
  EXPECT_EQ(spawn_detached({"/nonexistent/program"}), -1);
}

}  // namespace
}  // namespace havenoro::util
