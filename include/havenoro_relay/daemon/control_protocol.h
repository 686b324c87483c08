#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace havenoro::daemon {

/// The result code of every reply (docs/control-protocol.md).
enum class Result : int {
  kSuccess = 0,         ///< the command did what was asked
  kError = 1,           ///< it ran, and the change was rejected or failed
  kUnknownCommand = 2,  ///< no command of that name
  kNotFound = 3,        ///< the thing asked about does not exist
  kBadRequest = 4,      ///< not JSON, bad arguments, too long
  /// Not done now, and done later without being asked again: the daemon
  /// is stopping, and its next start reads the panel tree.
  kStopping = 5,
};

/// Members of a reply's `arguments` serialized ahead of time, without the
/// braces (`"apply":{...}`), made by encode_members(): what many replies
/// share is encoded once, not once per reply.
using EncodedMembers = std::shared_ptr<const std::string>;

/// One reply. Every command answers with this same envelope.
struct Reply {
  Result result = Result::kSuccess;
  std::string text;  ///< one line for a person
  nlohmann::json arguments = nlohmann::json::object();
  /// More members of `arguments`, already encoded; none of their names
  /// may be in `arguments` too. May be null.
  EncodedMembers encoded = nullptr;
};

/// One request as read from the socket.
struct Request {
  std::string command;
  nlohmann::json arguments = nlohmann::json::object();
};

/// A request line that cannot be used, or a reply line a client cannot
/// read; the message says why.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses one request line (without its newline). Throws ProtocolError
/// when it is not a JSON object with a string `command` and, if given, an
/// object `arguments`.
Request parse_request(std::string_view line);

/// The request as one line, without the newline.
std::string encode_request(const Request& request);

/// The reply as one line, without the newline. Any member named
/// `password`, at any depth, is left out: no reply carries one, whatever a
/// handler put in it.
std::string encode_reply(const Reply& reply);

/// The reply's line in three parts, the shared members (Reply::encoded)
/// between the others and not copied: a session writes them one after
/// another.
struct EncodedReply {
  std::string head;
  EncodedMembers shared;  ///< may be null
  std::string tail;
};

/// encode_reply(), in parts, the newline at the end of `tail`.
EncodedReply encode_reply_parts(const Reply& reply);

/// The members of `object` (a JSON object) encoded for Reply::encoded,
/// members named `password` left out as in encode_reply().
EncodedMembers encode_members(nlohmann::json object);

/// Parses one reply line. Throws ProtocolError.
Reply parse_reply(std::string_view line);

/// A reply with no arguments.
inline Reply make_reply(Result result, std::string text) {
  return Reply{result, std::move(text), nlohmann::json::object(), nullptr};
}

}  // namespace havenoro::daemon
