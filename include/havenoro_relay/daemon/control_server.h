#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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
/// and one JSON reply per line (docs/control-protocol.md). Each io_context
/// given is a lane run by one thread: it accepts on its own copy of the
/// listening descriptor and keeps the connections it accepted, so clients
/// are answered side by side and a connection never changes threads. A
/// handler that needs the applying thread answers later, so no client
/// ever blocks another or the applies. Handlers must be safe to call from
/// several threads at once.
class ControlServer {
 public:
  /// Creates the socket at `path` (its directory too, if missing), mode
  /// 0660, group `group`, and starts accepting on every lane. A stale
  /// socket from an earlier run is replaced; a live one (another daemon
  /// answers) is an error. Throws std::system_error.
  ControlServer(std::vector<boost::asio::io_context*> lanes,
                std::filesystem::path path, const std::string& group,
                CommandTable commands, ControlLimits limits);

  /// The same with one lane.
  ControlServer(boost::asio::io_context& io, std::filesystem::path path,
                const std::string& group, CommandTable commands,
                ControlLimits limits);

  /// Closes everything and removes the socket. No lane's thread may run
  /// by then.
  ~ControlServer();

  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  /// Limits for connections accepted from now on. From any thread.
  void set_limits(ControlLimits limits);

  /// Gives the socket to another group. Throws std::system_error.
  void set_group(const std::string& group);

  /// Removes the socket at once, then stops accepting and closes every
  /// connection on the lanes' own threads; the future says when all of
  /// them are done. From any thread; closing again is harmless.
  std::future<void> close();

  const std::filesystem::path& path() const { return path_; }

  /// Connections open right now.
  size_t connections() const;

 private:
  struct Lane;

  void accept(Lane& lane);
  void on_accept(Lane& lane,
                 boost::asio::local::stream_protocol::socket socket);
  void shut(Lane& lane);

  std::filesystem::path path_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::shared_ptr<const CommandTable> commands_;
  std::atomic<bool> open_{false};

  /// The open connections. Shared with them: a connection ends on its own
  /// lane, possibly after the server has gone.
  struct Sessions {
    std::mutex mutex;
    std::map<ControlSession*, std::weak_ptr<ControlSession>> open;
  };
  std::shared_ptr<Sessions> sessions_ = std::make_shared<Sessions>();
};

}  // namespace havenoro::daemon
