// Verifies the control socket with real connections: framing, limits,
// misbehaving clients, replies from another thread, and the socket file.

#include "havenoro_relay/daemon/control_server.h"

#include <sys/stat.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <chrono>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "control_fixture.h"
#include "havenoro_relay/util/group.h"

namespace havenoro::daemon {
namespace {

using nlohmann::json;
using testing::ControlServerFixture;
using testing::echo_table;
using testing::RawClient;

class ControlServerTest : public ControlServerFixture {};

json reply_of(RawClient& c) {
  auto line = c.read_line();
  EXPECT_TRUE(line) << "no reply";
  return line ? json::parse(*line) : json();
}

// The reply to `command`, without arguments, on a connection of its own.
json ask(const std::filesystem::path& socket, const std::string& command) {
  RawClient c(socket);
  c.send(R"({"command":")" + command + "\"}\n");
  return reply_of(c);
}

// Verifies that many requests on one connection, and many connections one
// after another, are all answered (a reply never eats the next request).
TEST_F(ControlServerTest, AnswersRequestsOneAfterAnother) {
  start(echo_table());
  RawClient one(socket_path());
  for (int i = 0; i < 20; ++i) {
    one.send(R"({"command":"echo","arguments":{"n":)" + std::to_string(i) +
             "}}\n");
    EXPECT_EQ(reply_of(one)["arguments"]["n"], i);
  }
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(ask(socket_path(), "echo")["result"], 0) << "connection " << i;
  }
}

// Verifies that requests sent in one write are answered in order.
TEST_F(ControlServerTest, AnswersPipelinedRequestsInOrder) {
  start(echo_table());
  RawClient c(socket_path());
  c.send(R"({"command":"echo","arguments":{"n":1}})"
         "\n"
         R"({"command":"echo","arguments":{"n":2}})"
         "\r\n"
         "\n"
         R"({"command":"echo","arguments":{"n":3}})"
         "\n");
  for (int n = 1; n <= 3; ++n) EXPECT_EQ(reply_of(c)["arguments"]["n"], n);
}

// Verifies that a line that is not JSON is answered and the connection
// keeps working.
TEST_F(ControlServerTest, NotJsonIsABadRequest) {
  start(echo_table());
  RawClient c(socket_path());
  c.send("hello\n");
  auto bad = reply_of(c);
  EXPECT_EQ(bad["result"], 4);
  EXPECT_EQ(bad["text"], "request is not JSON");
  c.send(R"({"command":"echo"})"
         "\n");
  EXPECT_EQ(reply_of(c)["result"], 0);
}

// Verifies that an unknown command gets result 2 and its name.
TEST_F(ControlServerTest, UnknownCommandIsNamed) {
  start(echo_table());
  auto r = ask(socket_path(), "explode");
  EXPECT_EQ(r["result"], 2);
  EXPECT_EQ(r["text"], "unknown command 'explode'");
}

// Verifies that a line longer than the limit is refused and closed.
TEST_F(ControlServerTest, OversizedLineIsRefusedAndClosed) {
  start(echo_table(), {1024, std::chrono::seconds(10), 64});
  RawClient c(socket_path());
  c.send(std::string(2000, 'x'));
  auto r = reply_of(c);
  EXPECT_EQ(r["result"], 4);
  EXPECT_EQ(r["text"], "request longer than 1024 bytes");
  EXPECT_TRUE(c.closed_by_peer());
}

// Verifies that a client that sends half a line and waits is dropped
// after the idle timeout, while another client is served meanwhile.
TEST_F(ControlServerTest, HalfLineIsDroppedAfterIdleTimeout) {
  start(echo_table(), {65536, std::chrono::seconds(1), 64});
  RawClient stalled(socket_path());
  stalled.send(R"({"command":"ec)");
  auto t0 = std::chrono::steady_clock::now();
  RawClient other(socket_path());
  other.send(R"({"command":"echo"})"
             "\n");
  EXPECT_EQ(reply_of(other)["result"], 0);
  EXPECT_TRUE(stalled.closed_by_peer());
  EXPECT_GE(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(900));
}

// Verifies that a handler may answer later from another thread, and that
// other clients are answered meanwhile.
TEST_F(ControlServerTest, ReplyMayComeFromAnotherThread) {
  std::promise<Responder> later;
  auto table = echo_table();
  table["slow"] = [&later](const json&, Responder respond) {
    later.set_value(respond);
  };
  start(table);
  RawClient slow(socket_path());
  slow.send(R"({"command":"slow"})"
            "\n");
  Responder respond = later.get_future().get();

  RawClient quick(socket_path());
  quick.send(R"({"command":"echo"})"
             "\n");
  EXPECT_EQ(reply_of(quick)["result"], 0);

  std::thread([respond] {
    respond({Result::kSuccess, "done later", json::object()});
    respond({Result::kError, "a second answer is ignored", json::object()});
  }).join();
  EXPECT_EQ(reply_of(slow)["text"], "done later");
  slow.send(R"({"command":"echo"})"
            "\n");
  EXPECT_EQ(reply_of(slow)["text"], "echo");
}

// Verifies that a handler that throws answers with result 1.
TEST_F(ControlServerTest, HandlerExceptionIsAnError) {
  auto table = echo_table();
  table["boom"] = [](const json&, Responder) {
    throw std::runtime_error("it broke");
  };
  start(table);
  auto r = ask(socket_path(), "boom");
  EXPECT_EQ(r["result"], 1);
  EXPECT_EQ(r["text"], "it broke");
}

// Verifies that connections past the limit are turned away at once.
TEST_F(ControlServerTest, TurnsAwayConnectionsPastTheLimit) {
  start(echo_table(), {65536, std::chrono::seconds(10), 2});
  RawClient a(socket_path()), b(socket_path());
  a.send(R"({"command":"echo"})"
         "\n");
  b.send(R"({"command":"echo"})"
         "\n");
  reply_of(a);
  reply_of(b);
  RawClient c(socket_path());
  EXPECT_EQ(reply_of(c)["text"], "too many connections");
  EXPECT_TRUE(c.closed_by_peer());
}

// Verifies the socket file: mode 0660, and removed on close.
TEST_F(ControlServerTest, SocketIs0660AndRemovedOnClose) {
  start(echo_table());
  struct stat st;
  ASSERT_EQ(::lstat(socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, util::group_id("root"));
  on_io([this] {
    server_->close();
    return 0;
  });
  EXPECT_FALSE(std::filesystem::exists(socket_path()));
}

// Verifies that a socket left by a dead daemon is replaced.
TEST_F(ControlServerTest, ReplacesStaleSocket) {
  std::filesystem::create_directories(socket_path().parent_path());
  {
    boost::asio::io_context other;
    boost::asio::local::stream_protocol::acceptor dead(
        other,
        boost::asio::local::stream_protocol::endpoint(socket_path().string()));
  }  // closed, file left behind
  ASSERT_TRUE(std::filesystem::exists(socket_path()));
  start(echo_table());
  EXPECT_EQ(ask(socket_path(), "echo")["result"], 0);
}

// Verifies that a socket another server answers on is left alone.
TEST_F(ControlServerTest, RefusesLiveSocket) {
  start(echo_table());
  boost::asio::io_context other;
  EXPECT_THROW(ControlServer(other, socket_path(), "root", echo_table(), {}),
               std::system_error);
  EXPECT_EQ(ask(socket_path(), "echo")["result"], 0);
}

// Verifies that a file that is not a socket is never removed.
TEST_F(ControlServerTest, RefusesToReplaceARegularFile) {
  std::filesystem::create_directories(socket_path().parent_path());
  std::ofstream(socket_path()) << "not a socket";
  EXPECT_THROW(ControlServer(io_, socket_path(), "root", echo_table(), {}),
               std::system_error);
  EXPECT_TRUE(std::filesystem::is_regular_file(socket_path()));
}

// Verifies that a server that cannot give its socket to the group fails
// without leaving the socket file behind: a client finds no daemon there.
TEST_F(ControlServerTest, FailedStartLeavesNoSocketFile) {
  EXPECT_THROW(ControlServer(io_, socket_path(), "no-such-group-havenoro",
                             echo_table(), {}),
               std::system_error);
  EXPECT_FALSE(std::filesystem::exists(socket_path()));
}

// Verifies two lanes, each an io_context on its own thread: while one
// lane's handler is busy, the other answers, so both take connections;
// close() ends both, removes the socket and closes idle connections.
TEST(ControlServerLanes, TwoLanesServeSideBySideAndClose) {
  havenoro::testing::TestDir tmp;
  auto path = tmp.path() / "control.sock";
  std::mutex mutex;
  std::set<std::thread::id> served_by;
  CommandTable table = {{"slow", [&](const json&, Responder respond) {
                           {
                             std::lock_guard lock(mutex);
                             served_by.insert(std::this_thread::get_id());
                           }
                           std::this_thread::sleep_for(
                               std::chrono::milliseconds(20));
                           respond({Result::kSuccess, "slow", {}});
                         }}};
  boost::asio::io_context a, b;
  auto guard_a = boost::asio::make_work_guard(a);
  auto guard_b = boost::asio::make_work_guard(b);
  ControlServer server({&a, &b}, path, "root", table, {});
  std::thread ta([&] { a.run(); }), tb([&] { b.run(); });

  RawClient idle(path);
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&] {
      RawClient c(path);
      c.send(R"({"command":"slow"})"
             "\n");
      auto line = c.read_line();
      if (line && json::parse(*line)["result"] == 0) ++answered;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(answered, 16);
  EXPECT_EQ(served_by.size(), 2u) << "one lane served every client";

  auto closed = server.close();
  EXPECT_EQ(closed.wait_for(std::chrono::seconds(5)),
            std::future_status::ready);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(idle.closed_by_peer());
  guard_a.reset();
  guard_b.reset();
  a.stop();
  b.stop();
  ta.join();
  tb.join();
}

// Verifies that an unknown group is an error naming it.
TEST(ControlServerGroup, UnknownGroupIsNamed) {
  try {
    util::group_id("no-such-group-havenoro");
    FAIL() << "no error";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-group-havenoro"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace havenoro::daemon
