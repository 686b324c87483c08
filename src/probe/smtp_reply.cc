#include "havenoro_relay/probe/smtp_reply.h"

#include <algorithm>
#include <cctype>

namespace havenoro::probe {
namespace {

// A relay that sends more lines than this in one reply is not one we want
// to keep listening to; real EHLO replies have a dozen.
constexpr size_t kMaxReplyLines = 100;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// The first word of a capability line, and where its parameters start.
std::string_view keyword_of(std::string_view line) {
  return line.substr(0, line.find_first_of(" ="));
}

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find(' ', at);
    if (end == std::string_view::npos) end = text.size();
    if (end > at) out.push_back(upper(text.substr(at, end - at)));
    at = end + 1;
  }
  return out;
}

}  // namespace

std::string SmtpReply::text() const {
  std::string out = std::to_string(code);
  for (size_t i = 0; i < lines.size(); ++i) {
    out += i == 0 ? " " : " / ";
    out += lines[i];
  }
  return out;
}

// RFC 5321 §4.2: "250-text" continues, "250 text" or a bare "250" ends.
SmtpReplyReader::Status SmtpReplyReader::add(std::string_view line) {
  if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) ||
      !is_digit(line[2])) {
    return Status::kMalformed;
  }
  bool more = line.size() > 3 && line[3] == '-';
  if (line.size() > 3 && !more && line[3] != ' ') return Status::kMalformed;

  int code = std::stoi(std::string(line.substr(0, 3)));
  if (!reply_.lines.empty() && code != reply_.code) return Status::kMalformed;
  if (reply_.lines.size() >= kMaxReplyLines) return Status::kMalformed;

  reply_.code = code;
  reply_.lines.emplace_back(line.size() > 4 ? line.substr(4) : "");
  return more ? Status::kMore : Status::kDone;
}

std::vector<std::string> ehlo_capabilities(const SmtpReply& ehlo) {
  if (ehlo.lines.size() < 2) return {};
  return {ehlo.lines.begin() + 1, ehlo.lines.end()};
}

bool has_capability(const std::vector<std::string>& capabilities,
                    std::string_view keyword) {
  std::string wanted = upper(keyword);
  return std::any_of(capabilities.begin(), capabilities.end(),
                     [&](const std::string& line) {
                       return upper(keyword_of(line)) == wanted;
                     });
}

std::vector<std::string> auth_mechanisms(
    const std::vector<std::string>& capabilities) {
  std::vector<std::string> out;
  for (const auto& line : capabilities) {
    std::string_view view(line);
    if (upper(keyword_of(view)) != "AUTH" || view.size() <= 5) continue;
    for (auto& word : words(view.substr(5))) {
      if (std::find(out.begin(), out.end(), word) == out.end())
        out.push_back(std::move(word));
    }
  }
  return out;
}

std::string choose_mechanism(const std::vector<std::string>& offered) {
  for (const char* preferred : {"PLAIN", "LOGIN"}) {
    if (std::find(offered.begin(), offered.end(), preferred) != offered.end())
      return preferred;
  }
  return "";
}

}  // namespace havenoro::probe
