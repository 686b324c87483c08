// Verifies the control protocol's lines: what a request must be, and that
// every reply has one envelope and never a password.

#include "havenoro_relay/daemon/control_protocol.h"

#include <gtest/gtest.h>

namespace havenoro::daemon {
namespace {

using nlohmann::json;

// Verifies that a request reads its command and arguments.
TEST(ControlProtocol, ParsesCommandAndArguments) {
  auto r = parse_request(
      R"({"command":"reconcile","arguments":{"domain":"a.example"}})");
  EXPECT_EQ(r.command, "reconcile");
  EXPECT_EQ(r.arguments["domain"], "a.example");
}

// Verifies that arguments may be left out.
TEST(ControlProtocol, ArgumentsAreOptional) {
  auto r = parse_request(R"({"command":"status-get"})");
  EXPECT_EQ(r.command, "status-get");
  EXPECT_TRUE(r.arguments.is_object());
  EXPECT_TRUE(r.arguments.empty());
}

// Verifies that lines which are not requests are refused with a reason.
TEST(ControlProtocol, RefusesWhatIsNotARequest) {
  for (const char* line :
       {"hello", "[1,2]", "{}", R"({"command":5})",
        R"({"command":"x","arguments":[]})", R"({"command":"x")"}) {
    EXPECT_THROW(parse_request(line), ProtocolError) << line;
  }
}

// Verifies that a reply has result, text and arguments, and reads back.
TEST(ControlProtocol, ReplyEnvelopeRoundTrips) {
  Reply reply{
      Result::kNotFound, "x.example: not in the panel's settings", {{"k", 1}}};
  auto line = encode_reply(reply);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto doc = json::parse(line);
  EXPECT_EQ(doc["result"], 3);
  EXPECT_EQ(doc["text"], reply.text);
  EXPECT_EQ(doc["arguments"]["k"], 1);
  auto back = parse_reply(line);
  EXPECT_EQ(back.result, Result::kNotFound);
  EXPECT_EQ(back.text, reply.text);
}

// Verifies that a password member is dropped at any depth.
TEST(ControlProtocol, ReplyNeverCarriesAPassword) {
  Reply reply{Result::kSuccess,
              "ok",
              {{"password", "top-Secret-1"},
               {"relay", {{"username", "u"}, {"password", "Secret-2"}}},
               {"list", json::array({{{"password", "Secret-3"}}})}}};
  auto line = encode_reply(reply);
  EXPECT_EQ(line.find("Secret"), std::string::npos) << line;
  EXPECT_NE(line.find("\"username\":\"u\""), std::string::npos) << line;
}

// Verifies that members encoded ahead of time join the reply's own, and
// that a reply of encoded members only is whole.
TEST(ControlProtocol, EncodedMembersJoinTheArguments) {
  auto shared = encode_members({{"apply", {{"written", 2}}}, {"n", 1}});
  Reply reply{Result::kSuccess, "ok", {{"domain", "a.example"}}, shared};
  auto doc = json::parse(encode_reply(reply));
  EXPECT_EQ(doc["arguments"]["domain"], "a.example");
  EXPECT_EQ(doc["arguments"]["apply"]["written"], 2);
  EXPECT_EQ(doc["arguments"]["n"], 1);
  reply.arguments = json::object();
  doc = json::parse(encode_reply(reply));
  EXPECT_EQ(doc["arguments"].size(), 2u);
  EXPECT_EQ(parse_reply(encode_reply(reply)).arguments["n"], 1);
}

// Verifies that encoded members never carry a password either.
TEST(ControlProtocol, EncodedMembersNeverCarryAPassword) {
  auto shared = encode_members(
      {{"relay", {{"username", "u"}, {"password", "Secret-4"}}}});
  EXPECT_EQ(shared->find("Secret"), std::string::npos) << *shared;
  EXPECT_NE(shared->find("\"username\":\"u\""), std::string::npos) << *shared;
}

// Verifies that the parts a session writes make the same line, the shared
// members not copied, with or without arguments of the reply's own.
TEST(ControlProtocol, ReplyPartsMakeTheLine) {
  auto shared = encode_members({{"generation", 7}, {"domains", 3}});
  for (json args : {json::object(), json{{"uptime_s", 5}}}) {
    for (auto encoded : {EncodedMembers(), shared}) {
      Reply reply{Result::kSuccess, "ok", args, encoded};
      auto parts = encode_reply_parts(reply);
      EXPECT_EQ(parts.shared.get(), encoded.get());
      std::string line = parts.head;
      if (parts.shared) line += *parts.shared;
      line += parts.tail;
      EXPECT_EQ(line, encode_reply(reply) + "\n");
      auto back = parse_reply(encode_reply(reply));
      EXPECT_EQ(back.arguments.contains("generation"), encoded != nullptr);
      EXPECT_EQ(back.arguments.contains("uptime_s"), !args.empty());
    }
  }
}

// Verifies that bytes which are not UTF-8 do not cost the reply.
TEST(ControlProtocol, InvalidUtf8IsReplaced) {
  Reply reply{Result::kError, std::string("bad \xff name"), json::object()};
  EXPECT_NO_THROW(json::parse(encode_reply(reply)));
}

// Verifies that a client refuses a reply without the envelope.
TEST(ControlProtocol, ClientRefusesBrokenReplies) {
  EXPECT_THROW(parse_reply(R"({"text":"x"})"), ProtocolError);
  EXPECT_THROW(parse_reply("not json"), ProtocolError);
}

// Verifies that a request line is one JSON object.
TEST(ControlProtocol, EncodesRequests) {
  auto line = encode_request({"domain-get", {{"domain", "a.example"}}});
  auto back = parse_request(line);
  EXPECT_EQ(back.command, "domain-get");
  EXPECT_EQ(back.arguments["domain"], "a.example");
  EXPECT_EQ(encode_request({"status-get", json::object()}),
            R"({"command":"status-get"})");
}

}  // namespace
}  // namespace havenoro::daemon
