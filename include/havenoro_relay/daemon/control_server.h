#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "havenoro_relay/daemon/control_protocol.h"

namespace havenoro::daemon {

class ControlSession;

/// Answers one request. Must be called exactly once, from any thread.
using Responder = std::function<void(Reply)>;

/// Handles one command: reads its arguments and answers through the
/// responder, at once or later (a reconcile that waits for its apply).
using CommandHandler =
    std::function<void(const nlohmann::json& arguments, Responder respond)>;

/// The commands the socket knows, by name.
using CommandTable = std::map<std::string, CommandHandler, std::less<>>;

/// How much one connection may ask of the daemon.
struct ControlLimits {
  size_t max_request_bytes = 65536;       ///< longest request line
  std::chrono::seconds idle_timeout{30};  ///< silence before disconnecting
  /// More are turned away at once. A panel's bulk edit runs one save hook
  /// per domain, each waiting on its own connection: hundreds at once.
  size_t max_connections = 1024;
};

/// The control socket: a Unix stream socket, one JSON request per line
/// and one JSON reply per line (docs/control-protocol.md). Runs on the
/// threads of its io_context, any number: each connection has its own
/// strand, so clients are answered side by side; a handler that needs the
/// applying thread answers later, so no client ever blocks another or the
/// applies. Handlers must be safe to call from several threads at once.
class ControlServer {
 public:
  /// Creates the socket at `path` (its directory too, if missing), mode
  /// 0660, group `group`, and starts accepting. A stale socket from an
  /// earlier run is replaced; a live one (another daemon answers) is an
  /// error. Throws std::system_error.
  ControlServer(boost::asio::io_context& io, std::filesystem::path path,
                const std::string& group, CommandTable commands,
                ControlLimits limits);

  /// Closes everything and removes the socket.
  ~ControlServer();

  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  /// Limits for connections accepted from now on. From any thread.
  void set_limits(ControlLimits limits);

  /// Gives the socket to another group. Throws std::system_error.
  void set_group(const std::string& group);

  /// Removes the socket at once, then stops accepting and closes every
  /// connection on the server's own threads; the future says when that
  /// is done. From any thread; closing again is harmless.
  std::future<void> close();

  const std::filesystem::path& path() const { return path_; }

  /// Connections open right now.
  size_t connections() const;

 private:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  void accept();
  void on_accept(boost::asio::local::stream_protocol::socket socket);
  void shut();

  boost::asio::io_context& io_;
  std::filesystem::path path_;
  Strand strand_;  ///< the acceptor's, the retry timer's, and limits_'s
  boost::asio::local::stream_protocol::acceptor acceptor_;
  boost::asio::steady_timer retry_;
  std::shared_ptr<const CommandTable> commands_;
  ControlLimits limits_;
  std::atomic<bool> open_{false};

  /// The open connections. Shared with them: a connection ends on its own
  /// strand, possibly after the server has gone.
  struct Sessions {
    std::mutex mutex;
    std::map<ControlSession*, std::weak_ptr<ControlSession>> open;
  };
  std::shared_ptr<Sessions> sessions_ = std::make_shared<Sessions>();
};

/// The gid of a group name, for the socket's owner. Throws
/// std::system_error naming the group when there is none.
unsigned group_id(const std::string& group);

}  // namespace havenoro::daemon
