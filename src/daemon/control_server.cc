#include "havenoro_relay/daemon/control_server.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <vector>

#include "control_session.h"
#include "havenoro_relay/daemon/log_event.h"
#include "havenoro_relay/util/fd.h"
#include "havenoro_relay/util/group.h"

namespace havenoro::daemon {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using stream = asio::local::stream_protocol;

constexpr mode_t kSocketMode = 0660;

// A socket file left by a daemon that died is replaced; one that still
// answers belongs to a running daemon, which must keep it.
void clear_stale_socket(asio::io_context& io, const fs::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw util::errno_error("stat", path.string());
  }
  if (!S_ISSOCK(st.st_mode)) {
    throw std::system_error(std::make_error_code(std::errc::file_exists),
                            "'" + path.string() + "' is not a socket");
  }
  stream::socket probe(io);
  boost::system::error_code ec;
  probe.connect(stream::endpoint(path.string()), ec);
  if (!ec) {
    throw std::system_error(
        std::make_error_code(std::errc::address_in_use),
        "another havenoro-relayd answers on '" + path.string() + "'");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw util::errno_error("unlink", path.string());
}

// The socket file takes its mode from the umask at bind(): with 0117 it
// is born 0660, so there is no moment in which others may connect. The
// umask is the process's; the server is made before other threads run.
void bind_private(stream::acceptor& acceptor, const fs::path& path) {
  mode_t old = ::umask(0117);
  boost::system::error_code ec;
  acceptor.bind(stream::endpoint(path.string()), ec);
  ::umask(old);
  if (ec) {
    throw std::system_error(ec, "bind '" + path.string() + "'");
  }
}

void give_to_group(const fs::path& path, const std::string& group) {
  if (::chown(path.c_str(), static_cast<uid_t>(-1), util::group_id(group)) != 0)
    throw util::errno_error("chown", path.string());
  if (::chmod(path.c_str(), kSocketMode) != 0)
    throw util::errno_error("chmod", path.string());
}

}  // namespace

// One thread's io_context, with its acceptor and its own copy of the
// limits (read there only, changed there by a post).
struct ControlServer::Lane {
  explicit Lane(asio::io_context& io) : io(io), acceptor(io), retry(io) {}
  asio::io_context& io;
  stream::acceptor acceptor;
  asio::steady_timer retry;
  ControlLimits limits;
};

ControlServer::ControlServer(asio::io_context& io, fs::path path,
                             const std::string& group, CommandTable commands,
                             ControlLimits limits)
    : ControlServer(std::vector<asio::io_context*>{&io}, std::move(path), group,
                    std::move(commands), limits) {}

ControlServer::ControlServer(std::vector<asio::io_context*> lanes,
                             fs::path path, const std::string& group,
                             CommandTable commands, ControlLimits limits)
    : path_(std::move(path)),
      commands_(std::make_shared<const CommandTable>(std::move(commands))) {
  for (auto* io : lanes) {
    lanes_.push_back(std::make_unique<Lane>(*io));
    lanes_.back()->limits = limits;
  }
  std::error_code ec;
  if (fs::create_directories(path_.parent_path(), ec)) {
    fs::permissions(path_.parent_path(), fs::perms(0755), ec);
  }
  auto& first = lanes_.front()->acceptor;
  clear_stale_socket(lanes_.front()->io, path_);
  first.open(stream());
  bind_private(first, path_);
  // Listening at once: a second daemon started meanwhile finds this one
  // answering, never a socket that refuses and looks stale.
  first.listen();
  struct stat bound {};
  ::lstat(path_.c_str(), &bound);
  open_ = true;
  try {
    give_to_group(path_, group);
    // The other lanes wait on copies of the listening descriptor: the
    // kernel hands each connection to one of them.
    for (size_t i = 1; i < lanes_.size(); ++i) {
      int fd = ::fcntl(first.native_handle(), F_DUPFD_CLOEXEC, 0);
      if (fd < 0) throw util::errno_error("dup", path_.string());
      lanes_[i]->acceptor.assign(stream(), fd);
    }
  } catch (...) {
    for (auto& lane : lanes_) shut(*lane);
    struct stat now {};
    if (::lstat(path_.c_str(), &now) == 0 && now.st_ino == bound.st_ino &&
        now.st_dev == bound.st_dev) {
      ::unlink(path_.c_str());  // this server's file, no other's
    }
    throw;
  }
  spdlog::info(LogEvent("control.listen")
                   .add("socket", path_.string())
                   .add("group", group)
                   .add("mode", "0660")
                   .str());
  for (auto& lane : lanes_) accept(*lane);
}

ControlServer::~ControlServer() {
  for (auto& lane : lanes_) shut(*lane);
  ::unlink(path_.c_str());
}

void ControlServer::set_limits(ControlLimits limits) {
  for (auto& lane : lanes_) {
    asio::post(lane->io, [l = lane.get(), limits] { l->limits = limits; });
  }
}

void ControlServer::set_group(const std::string& group) {
  give_to_group(path_, group);
}

size_t ControlServer::connections() const {
  std::lock_guard lock(sessions_->mutex);
  return sessions_->open.size();
}

std::future<void> ControlServer::close() {
  auto done = std::make_shared<std::promise<void>>();
  auto future = done->get_future();
  if (!open_.exchange(false)) {
    done->set_value();
    return future;
  }
  // A client that finds no socket file knows at once the daemon is gone,
  // whatever the lanes still have to do.
  ::unlink(path_.c_str());
  auto left = std::make_shared<std::atomic<size_t>>(lanes_.size());
  for (auto& lane : lanes_) {
    asio::post(lane->io, [this, l = lane.get(), done, left] {
      shut(*l);
      if (--*left == 0) done->set_value();
    });
  }
  return future;
}

// On the lane's thread (or with no thread running): stops its acceptor
// and closes the connections it accepted.
void ControlServer::shut(Lane& lane) {
  boost::system::error_code ignored;
  lane.acceptor.close(ignored);
  lane.retry.cancel();
  std::vector<std::shared_ptr<ControlSession>> live;
  {
    std::lock_guard lock(sessions_->mutex);
    for (auto it = sessions_->open.begin(); it != sessions_->open.end();) {
      auto s = it->second.lock();
      if (s && &s->io() != &lane.io) {
        ++it;
        continue;
      }
      if (s) live.push_back(std::move(s));
      it = sessions_->open.erase(it);
    }
  }
  for (auto& s : live) s->close();
}

void ControlServer::accept(Lane& lane) {
  lane.acceptor.async_accept(
      [this, &lane](boost::system::error_code ec, stream::socket socket) {
        if (ec == asio::error::operation_aborted || !lane.acceptor.is_open())
          return;
        if (!ec) {
          on_accept(lane, std::move(socket));
          accept(lane);
          return;
        }
        // Out of descriptors, most likely; or another lane took the
        // connection first (EAGAIN): keep serving the connections that
        // are open and try again, in a moment if it was an error.
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
          accept(lane);
          return;
        }
        spdlog::warn(
            LogEvent("control.accept_failed").add("error", ec.message()).str());
        lane.retry.expires_after(std::chrono::milliseconds(200));
        lane.retry.async_wait([this, &lane](boost::system::error_code wait_ec) {
          if (!wait_ec && lane.acceptor.is_open()) accept(lane);
        });
      });
}

void ControlServer::on_accept(Lane& lane, stream::socket socket) {
  if (connections() >= lane.limits.max_connections) {
    spdlog::warn(LogEvent("control.too_many_connections")
                     .add("limit", lane.limits.max_connections)
                     .str());
    // A fresh socket's send buffer is empty: this write cannot block.
    boost::system::error_code ignored;
    asio::write(socket,
                asio::buffer(encode_reply(make_reply(Result::kError,
                                                     "too many connections")) +
                             "\n"),
                ignored);
    return;
  }
  auto forget =
      [weak = std::weak_ptr<Sessions>(sessions_)](ControlSession* closed) {
        if (auto sessions = weak.lock()) {
          std::lock_guard lock(sessions->mutex);
          sessions->open.erase(closed);
        }
      };
  auto session = std::make_shared<ControlSession>(
      std::move(socket), commands_, lane.limits, std::move(forget));
  {
    std::lock_guard lock(sessions_->mutex);
    sessions_->open[session.get()] = session;
  }
  session->start();
}

}  // namespace havenoro::daemon
