#include "havenoro_relay/probe/transcript.h"

#include <fmt/format.h>

#include <algorithm>

#include "base64.h"
#include "havenoro_relay/render/credential_file.h"

namespace havenoro::probe {

// Kept longest first, so that a secret containing another is replaced
// whole rather than left with a hole in it.
void Redactor::add_secret(std::string secret) {
  if (secret.empty()) return;
  auto longer = [&](const std::string& s) { return s.size() >= secret.size(); };
  auto at = std::find_if_not(secrets_.begin(), secrets_.end(), longer);
  secrets_.insert(at, std::move(secret));
}

void Redactor::add_credentials(const std::string& username,
                               const std::string& password) {
  add_secret(plain_response(username, password));
  add_secret(render::base64_encode(password));
  add_secret(password);
}

std::string Redactor::redact(std::string_view text) const {
  std::string out(text);
  for (const auto& secret : secrets_) {
    for (size_t at = out.find(secret); at != std::string::npos;
         at = out.find(secret, at + kRedacted.size())) {
      out.replace(at, secret.size(), kRedacted);
    }
  }
  return out;
}

std::string Redactor::clean(std::string_view text) const {
  return printable(redact(text));
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f)
      out += c;
    else
      out += fmt::format("\\x{:02X}", byte);
  }
  return out;
}

void Transcript::client(std::string_view line) {
  lines_.push_back("C: " + redactor_.clean(line));
}

void Transcript::client_redacted(std::string_view shown) {
  lines_.push_back(fmt::format("C: {}{}", redactor_.clean(shown), kRedacted));
}

void Transcript::server(std::string_view line) {
  lines_.push_back("S: " + redactor_.clean(line));
}

void Transcript::note(std::string_view text) {
  lines_.push_back("* " + redactor_.clean(text));
}

}  // namespace havenoro::probe
