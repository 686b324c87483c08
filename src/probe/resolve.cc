#include "resolve.h"

#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace havenoro::probe {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

// Shared between the probe and the thread that resolves; whichever ends
// last frees it.
struct Pending {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  Resolution resolution;
};

void resolve_into(const std::shared_ptr<Pending>& pending, std::string host,
                  uint16_t port) {
  asio::io_context io;
  tcp::resolver resolver(io);
  Resolution r;
  r.endpoints = resolver.resolve(host, std::to_string(port),
                                 tcp::resolver::numeric_service, r.error);
  std::lock_guard lock(pending->mutex);
  pending->resolution = std::move(r);
  pending->done = true;
  pending->done_cv.notify_all();
}

}  // namespace

// getaddrinfo cannot be interrupted, and Asio's own asynchronous resolver
// joins its lookup thread when the io_context goes away, so a DNS server
// that never answers would hold the probe past its time limit. The lookup
// runs on a detached thread instead; on timeout the probe walks away and
// the thread ends whenever the C library gives up.
Resolution resolve_host(const std::string& host, uint16_t port,
                        std::chrono::steady_clock::time_point deadline) {
  auto pending = std::make_shared<Pending>();
  std::thread(resolve_into, pending, host, port).detach();

  std::unique_lock lock(pending->mutex);
  if (!pending->done_cv.wait_until(lock, deadline,
                                   [&] { return pending->done; })) {
    Resolution r;
    r.timed_out = true;
    return r;
  }
  return std::move(pending->resolution);
}

}  // namespace havenoro::probe
