#include "havenoro_relay/daemon/status_reply.h"

namespace havenoro::daemon {

StatusReply::StatusReply(const ApplyLoop& loop, const DaemonInfo& info)
    : loop_(loop), info_(info) {}

std::shared_ptr<const StatusReply::Encoded> StatusReply::current() const {
  auto engine_status = loop_.status_snapshot();
  unsigned long version = info_.version();
  std::lock_guard lock(mutex_);
  if (encoded_ && encoded_->engine_status == engine_status &&
      encoded_->info_version == version) {
    return encoded_;
  }
  nlohmann::json doc = info_.complete(*engine_status, 0, 0);
  // Added to each reply, not kept: they change without an apply.
  for (const char* key : {"uptime_s", "applies", "queued"}) doc.erase(key);
  auto fresh = std::make_shared<Encoded>();
  fresh->engine_status = std::move(engine_status);
  fresh->info_version = version;
  fresh->text = status_line(doc);
  fresh->members = encode_members(std::move(doc));
  encoded_ = std::move(fresh);
  return encoded_;
}

Reply StatusReply::now() const {
  auto encoded = current();
  return {Result::kSuccess,
          encoded->text,
          {{"uptime_s", info_.uptime_s()},
           {"applies", loop_.applies()},
           {"queued", loop_.queued()}},
          encoded->members};
}

}  // namespace havenoro::daemon
