#include "havenoro_relay/status/delivery_log.h"

#include <algorithm>
#include <cctype>

namespace havenoro::status {
namespace {

// Arrivals whose outcome is never logged (local deliveries, messages
// still queued at a restart) are dropped beyond this many.
constexpr size_t kMaxTracked = 200000;

std::string sender_domain(std::string_view rest) {
  auto sender = rest.substr(0, rest.find(' '));
  auto at = sender.rfind('@');
  if (at == std::string_view::npos) return {};
  std::string domain(sender.substr(at + 1));
  std::transform(domain.begin(), domain.end(), domain.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return domain;
}

// The reason after "defer (...): " or "** rcpt ...: reason".
std::string failure_text(std::string_view rest) {
  auto colon = rest.find(": ");
  return std::string(colon == std::string_view::npos ? rest
                                                     : rest.substr(colon + 2));
}

}  // namespace

std::optional<LogLine> parse_log_line(std::string_view line) {
  // date (10) + space + time (8) + space + id + space + flag + space
  if (line.size() < 40 || line[10] != ' ' || line[19] != ' ') return {};
  auto id_end = line.find(' ', 20);
  if (id_end == std::string_view::npos || id_end - 20 < 16) return {};
  auto id = line.substr(20, id_end - 20);
  if (id.find('-') == std::string_view::npos) return {};
  auto rest = line.substr(id_end + 1);
  auto flag_end = rest.find(' ');
  if (flag_end == std::string_view::npos) return {};
  return LogLine{line.substr(0, 19), id, rest.substr(0, flag_end),
                 rest.substr(flag_end + 1)};
}

std::string log_field(std::string_view rest, std::string_view key) {
  std::string needle = " " + std::string(key) + "=";
  auto at = rest.find(needle);
  if (at == std::string_view::npos) return {};
  auto value = rest.substr(at + needle.size());
  if (!value.empty() && value.front() == '"') {
    auto end = value.find('"', 1);
    return std::string(value.substr(
        1, end == std::string_view::npos ? std::string_view::npos : end - 1));
  }
  if (key == "H") {
    auto end = value.find(']');
    if (end != std::string_view::npos) {
      return std::string(value.substr(0, end + 1));
    }
  }
  return std::string(value.substr(0, value.find(' ')));
}

DeliveryLog::DeliveryLog(std::filesystem::path main_log)
    : tail_(std::move(main_log)) {}

void DeliveryLog::absorb(std::string_view line) {
  auto p = parse_log_line(line);
  if (!p) return;
  if (p->flag == "<=") {
    auto domain = sender_domain(p->rest);
    if (domain.empty()) return;
    if (senders_.size() >= kMaxTracked) senders_.clear();
    senders_[std::string(p->id)] = domain;
    return;
  }
  if (p->flag != "=>" && p->flag != "==" && p->flag != "**") return;
  std::string router = log_field(p->rest, "R");
  if (router != "havenoro_relay" && router != "havenoro_default") return;
  auto sender = senders_.find(std::string(p->id));
  if (sender == senders_.end()) return;

  DeliveryEvent e{std::string(p->time),
                  std::string(p->id),
                  "",
                  router,
                  log_field(p->rest, "H"),
                  ""};
  auto& d = domains_[sender->second];
  if (p->flag == "=>") {
    e.outcome = "delivered";
    e.response = log_field(p->rest, "C");
    d.last_delivery = std::move(e);
  } else {
    e.outcome = p->flag == "==" ? "deferred" : "bounced";
    e.response = failure_text(p->rest);
    d.last_failure = std::move(e);
  }
}

size_t DeliveryLog::poll() {
  auto lines = tail_.read_lines();
  for (const auto& line : lines) absorb(line);
  return lines.size();
}

const DomainDeliveries* DeliveryLog::find(const std::string& domain) const {
  auto it = domains_.find(domain);
  return it == domains_.end() ? nullptr : &it->second;
}

}  // namespace havenoro::status
