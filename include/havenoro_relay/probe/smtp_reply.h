#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace havenoro::probe {

/// One SMTP reply (RFC 5321 §4.2): a three-digit code and the text of each
/// of its lines, without the code and the separator.
struct SmtpReply {
  int code = 0;
  std::vector<std::string> lines;

  /// 2xx or 3xx: the server accepted the command (so far).
  bool positive() const { return code >= 200 && code < 400; }
  /// The reply as a person reads it: "535 5.7.8 Bad credentials", lines
  /// after the first joined with " / ".
  std::string text() const;
};

/// Collects the lines of one reply as they arrive.
class SmtpReplyReader {
 public:
  enum class Status { kMore, kDone, kMalformed };

  /// Adds one line (CR LF already removed). kMalformed: not a reply line,
  /// a code that changed mid-reply, or too many lines.
  Status add(std::string_view line);
  const SmtpReply& reply() const { return reply_; }

 private:
  SmtpReply reply_;
};

/// The capabilities of an EHLO reply: every line after the greeting,
/// keyword and parameters as the server wrote them ("AUTH PLAIN LOGIN").
std::vector<std::string> ehlo_capabilities(const SmtpReply& ehlo);

/// True when a capability line starts with `keyword` (case-insensitive),
/// alone or followed by parameters.
bool has_capability(const std::vector<std::string>& capabilities,
                    std::string_view keyword);

/// The AUTH mechanisms offered, upper case, in the server's order. Reads
/// "AUTH PLAIN LOGIN" and the older "AUTH=PLAIN LOGIN".
std::vector<std::string> auth_mechanisms(
    const std::vector<std::string>& capabilities);

/// The mechanism the probe uses: PLAIN when offered, else LOGIN, else "".
/// These are the two Exim's authenticators speak.
std::string choose_mechanism(const std::vector<std::string>& offered);

}  // namespace havenoro::probe
