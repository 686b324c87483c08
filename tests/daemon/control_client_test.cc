// Verifies havenoro-relayctl's client: a reply, or Unreachable within its
// time limit, never a hang.

#include "havenoro_relay/ctl/control_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>

#include "control_fixture.h"

namespace havenoro::ctl {
namespace {

using daemon::testing::ControlServerFixture;
using daemon::testing::echo_table;
using nlohmann::json;
using namespace std::chrono_literals;

class ControlClientTest : public ControlServerFixture {};

// Verifies a request and its reply.
TEST_F(ControlClientTest, CallsACommand) {
  start(echo_table());
  ControlClient client(socket_path(), 5s);
  auto reply = client.call({"echo", {{"n", 5}}});
  EXPECT_EQ(reply.result, daemon::Result::kSuccess);
  EXPECT_EQ(reply.arguments["n"], 5);
}

// Verifies that no socket is Unreachable, with the path in the message.
TEST_F(ControlClientTest, MissingSocketIsUnreachable) {
  ControlClient client(socket_path(), 5s);
  try {
    client.call({"echo", json::object()});
    FAIL() << "no error";
  } catch (const Unreachable& e) {
    EXPECT_NE(std::string(e.what()).find(socket_path().string()),
              std::string::npos);
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

// Verifies that a socket that never answers gives up on time.
TEST_F(ControlClientTest, SilentDaemonTimesOut) {
  std::filesystem::create_directories(socket_path().parent_path());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path().c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  auto t0 = std::chrono::steady_clock::now();
  ControlClient client(socket_path(), 300ms);
  EXPECT_THROW(client.call({"echo", json::object()}), Unreachable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ::close(fd);
}

}  // namespace
}  // namespace havenoro::ctl
