#include "havenoro_relay/probe/test_message.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "havenoro_relay/status/delivery_log.h"
#include "havenoro_relay/status/log_tail.h"
#include "havenoro_relay/util/process.h"

namespace havenoro::probe {
namespace {

using Clock = std::chrono::steady_clock;

std::string smtp_dialogue(const std::string& from, const std::string& to) {
  auto now = std::chrono::system_clock::now();
  std::string date =
      fmt::format("{:%a, %d %b %Y %H:%M:%S +0000}",
                  fmt::gmtime(std::chrono::system_clock::to_time_t(now)));
  return fmt::format(
      "EHLO localhost\r\n"
      "MAIL FROM:<{0}>\r\n"
      "RCPT TO:<{1}>\r\n"
      "DATA\r\n"
      "From: <{0}>\r\n"
      "To: <{1}>\r\n"
      "Date: {2}\r\n"
      "Subject: Test message from havenoro-relayd\r\n"
      "\r\n"
      "This message tests the outgoing relay of {3}.\r\n"
      "It was sent by the server's Test button; no reply is needed.\r\n"
      ".\r\n"
      "QUIT\r\n",
      from, to, date, from.substr(from.find('@') + 1));
}

// Reads the log from `offset` until a line says what became of the id.
bool follow(TestMessageResult& r, const std::filesystem::path& log,
            std::uintmax_t offset, Clock::time_point deadline) {
  status::LogTail tail(log, offset);
  while (Clock::now() < deadline) {
    for (const auto& text : tail.read_lines()) {
      auto line = status::parse_log_line(text);
      if (!line || line->id != r.message_id) continue;
      const char* outcome = line->flag == "=>"   ? "delivered"
                            : line->flag == "==" ? "deferred"
                            : line->flag == "**" ? "bounced"
                                                 : nullptr;
      if (!outcome) continue;
      r.outcome = outcome;
      r.router = status::log_field(line->rest, "R");
      r.host = status::log_field(line->rest, "H");
      auto reason = line->rest.find(": ");
      r.response = line->flag == "=>" ? status::log_field(line->rest, "C")
                   : reason == std::string_view::npos
                       ? std::string(line->rest)
                       : std::string(line->rest.substr(reason + 2));
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace

nlohmann::json TestMessageResult::to_json() const {
  return {{"sender", sender},       {"message_id", message_id},
          {"outcome", outcome},     {"router", router},
          {"host", host},           {"response", response},
          {"took_ms", took.count()}};
}

bool is_plain_address(const std::string& address) {
  if (address.empty() || address.size() > 254) return false;
  auto at = address.find('@');
  if (at == 0 || at == std::string::npos || at + 1 == address.size() ||
      address.find('@', at + 1) != std::string::npos) {
    return false;
  }
  return std::none_of(address.begin(), address.end(), [](unsigned char c) {
    return c <= ' ' || c == 0x7f || c == '<' || c == '>';
  });
}

TestMessageResult send_test_message(const std::string& domain,
                                    const std::string& to,
                                    const TestMessageOptions& o) {
  auto start = Clock::now();
  auto deadline = start + o.timeout;
  TestMessageResult r;
  r.sender = "postmaster@" + domain;
  auto offset = status::LogTail::end_of(o.main_log);
  auto run = util::run_process(
      {o.exim_binary.string(), "-C", o.exim_config.string(), "-bs"},
      smtp_dialogue(r.sender, to), o.timeout);
  std::smatch m;
  static const std::regex kAccepted(R"(250 OK id=(\S+))");
  if (!std::regex_search(run.out, m, kAccepted)) {
    r.outcome = "not accepted";
    auto last = run.out.find_last_of("\n", run.out.size() - 2);
    r.response = run.out.substr(last == std::string::npos ? 0 : last + 1);
  } else {
    r.message_id = m[1];
    if (!follow(r, o.main_log, offset, deadline)) r.outcome = "still queued";
  }
  r.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() -
                                                                 start);
  return r;
}

}  // namespace havenoro::probe
