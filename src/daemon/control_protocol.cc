#include "havenoro_relay/daemon/control_protocol.h"

namespace havenoro::daemon {
namespace {

using nlohmann::json;

json parse_object(std::string_view line, const char* what) {
  json doc = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded())
    throw ProtocolError(std::string(what) + " is not JSON");
  if (!doc.is_object())
    throw ProtocolError(std::string(what) + " is not a JSON object");
  return doc;
}

// A handler that copies settings into a reply must not leak a password:
// drop the member wherever it is.
void drop_passwords(json& value) {
  if (value.is_object()) {
    value.erase("password");
    for (auto& [key, member] : value.items()) drop_passwords(member);
  } else if (value.is_array()) {
    for (auto& member : value) drop_passwords(member);
  }
}

// Replace invalid UTF-8 rather than throw: a file name from the panel
// tree should not cost the client its reply.
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

Request parse_request(std::string_view line) {
  json doc = parse_object(line, "request");
  auto command = doc.find("command");
  if (command == doc.end() || !command->is_string())
    throw ProtocolError("request has no \"command\" string");
  Request request{command->get<std::string>(), json::object()};
  if (auto args = doc.find("arguments"); args != doc.end()) {
    if (!args->is_object())
      throw ProtocolError("\"arguments\" must be an object");
    request.arguments = *args;
  }
  return request;
}

std::string encode_request(const Request& request) {
  json doc = {{"command", request.command}};
  if (!request.arguments.empty()) doc["arguments"] = request.arguments;
  return doc.dump();
}

EncodedReply encode_reply_parts(const Reply& reply) {
  std::string args = "{}";
  if (reply.arguments.is_object() && !reply.arguments.empty()) {
    json arguments = reply.arguments;
    drop_passwords(arguments);
    args = dump(arguments);
  }
  EncodedReply parts;
  parts.head = "{\"result\":";
  parts.head += std::to_string(static_cast<int>(reply.result));
  parts.head += ",\"text\":";
  parts.head += dump(json(reply.text));
  parts.head += ",\"arguments\":";
  if (reply.encoded && !reply.encoded->empty()) {
    // Spliced in as text, not copied: a status page's members are
    // kilobytes, and every block of that size takes the allocator's lock,
    // which the applying thread holds often.
    parts.head.append(args, 0, args.size() - 1);
    if (args.size() > 2) parts.head += ',';
    parts.shared = reply.encoded;
    parts.tail = "}}\n";
  } else {
    parts.head += args;
    parts.tail = "}\n";
  }
  return parts;
}

std::string encode_reply(const Reply& reply) {
  auto parts = encode_reply_parts(reply);
  std::string line = std::move(parts.head);
  if (parts.shared) line += *parts.shared;
  line += parts.tail;
  line.pop_back();  // the newline
  return line;
}

EncodedMembers encode_members(json object) {
  drop_passwords(object);
  std::string text = object.is_object() ? dump(object) : "{}";
  return std::make_shared<const std::string>(text.substr(1, text.size() - 2));
}

Reply parse_reply(std::string_view line) {
  json doc = parse_object(line, "reply");
  auto result = doc.find("result");
  auto text = doc.find("text");
  if (result == doc.end() || !result->is_number_integer() ||
      text == doc.end() || !text->is_string()) {
    throw ProtocolError("reply has no \"result\" code or \"text\"");
  }
  Reply reply{static_cast<Result>(result->get<int>()), text->get<std::string>(),
              json::object()};
  if (auto args = doc.find("arguments"); args != doc.end())
    reply.arguments = *args;
  return reply;
}

}  // namespace havenoro::daemon
