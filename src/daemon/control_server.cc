#include "havenoro_relay/daemon/control_server.h"

#include <grp.h>
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
  if (::chown(path.c_str(), static_cast<uid_t>(-1), group_id(group)) != 0)
    throw util::errno_error("chown", path.string());
  if (::chmod(path.c_str(), kSocketMode) != 0)
    throw util::errno_error("chmod", path.string());
}

}  // namespace

unsigned group_id(const std::string& group) {
  std::vector<char> buf(16384);
  struct group entry;
  struct group* found = nullptr;
  int rc = ::getgrnam_r(group.c_str(), &entry, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    throw std::system_error(
        std::make_error_code(rc ? std::errc(rc) : std::errc::invalid_argument),
        "no group '" + group + "'");
  }
  return found->gr_gid;
}

ControlServer::ControlServer(asio::io_context& io, fs::path path,
                             const std::string& group, CommandTable commands,
                             ControlLimits limits)
    : io_(io),
      path_(std::move(path)),
      strand_(asio::make_strand(io)),
      acceptor_(strand_),
      retry_(strand_),
      commands_(std::make_shared<const CommandTable>(std::move(commands))),
      limits_(limits) {
  std::error_code ec;
  if (fs::create_directories(path_.parent_path(), ec)) {
    fs::permissions(path_.parent_path(), fs::perms(0755), ec);
  }
  clear_stale_socket(io_, path_);
  acceptor_.open(stream());
  bind_private(acceptor_, path_);
  open_ = true;
  try {
    give_to_group(path_, group);
    acceptor_.listen();
  } catch (...) {
    shut();
    throw;
  }
  spdlog::info(LogEvent("control.listen")
                   .add("socket", path_.string())
                   .add("group", group)
                   .add("mode", "0660")
                   .str());
  accept();
}

// By now no thread runs the io_context (it is stopped or being
// destroyed), so nothing races the closing here.
ControlServer::~ControlServer() {
  shut();
}

void ControlServer::set_limits(ControlLimits limits) {
  asio::post(strand_, [this, limits] { limits_ = limits; });
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
  if (!open_) {
    done->set_value();
    return future;
  }
  // A client that finds no socket file knows at once the daemon is gone,
  // whatever the threads below still have to do.
  ::unlink(path_.c_str());
  asio::post(strand_, [this, done] {
    shut();
    done->set_value();
  });
  return future;
}

// On the acceptor's strand (or with no thread running): each session is
// closed on its own strand.
void ControlServer::shut() {
  if (!open_.exchange(false)) return;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  retry_.cancel();
  std::vector<std::shared_ptr<ControlSession>> live;
  {
    std::lock_guard lock(sessions_->mutex);
    for (auto& [raw, weak] : sessions_->open) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    sessions_->open.clear();
  }
  for (auto& s : live) s->close_soon();
  ::unlink(path_.c_str());
}

// Each connection gets a strand of its own: its reads, writes, timer and
// replies never run at once, while other connections run beside it.
void ControlServer::accept() {
  acceptor_.async_accept(
      asio::make_strand(io_),
      [this](boost::system::error_code ec, stream::socket socket) {
        if (ec == asio::error::operation_aborted || !open_) return;
        if (!ec) {
          on_accept(std::move(socket));
          accept();
          return;
        }
        // Out of descriptors, most likely: say so, keep serving the
        // connections that are open and try again in a moment rather
        // than spin.
        spdlog::warn(
            LogEvent("control.accept_failed").add("error", ec.message()).str());
        retry_.expires_after(std::chrono::milliseconds(200));
        retry_.async_wait([this](boost::system::error_code wait_ec) {
          if (!wait_ec && open_) accept();
        });
      });
}

void ControlServer::on_accept(stream::socket socket) {
  if (connections() >= limits_.max_connections) {
    spdlog::warn(LogEvent("control.too_many_connections")
                     .add("limit", limits_.max_connections)
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
  auto session = std::make_shared<ControlSession>(std::move(socket), commands_,
                                                  limits_, std::move(forget));
  {
    std::lock_guard lock(sessions_->mutex);
    sessions_->open[session.get()] = session;
  }
  session->start_soon();
}

}  // namespace havenoro::daemon
