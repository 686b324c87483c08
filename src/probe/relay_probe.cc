#include "havenoro_relay/probe/relay_probe.h"

#include <nlohmann/json.hpp>

#include "probe_run.h"

namespace havenoro::probe {
namespace {

using nlohmann::json;

// Empty text reads better as null to a program than as "".
json text_or_null(const std::string& text) {
  return text.empty() ? json(nullptr) : json(text);
}

json step_json(const ProbeStep& step) {
  return {{"name", step.name},
          {"ok", step.ok},
          {"took_ms", step.took.count()},
          {"detail", step.detail}};
}

json tls_json(const TlsInfo& tls) {
  return {{"mode", tls.mode},
          {"protocol", text_or_null(tls.protocol)},
          {"cipher", text_or_null(tls.cipher)},
          {"subject", tls.subject},
          {"issuer", tls.issuer},
          {"verified", tls.verified},
          {"verify_detail", tls.verify_detail}};
}

}  // namespace

json ProbeResult::to_json() const {
  json steps_json = json::array();
  for (const auto& step : steps) steps_json.push_back(step_json(step));
  return {{"works", works},
          {"verdict", verdict},
          {"failed_step", text_or_null(failed_step)},
          {"hint", text_or_null(hint)},
          {"relay", relay},
          {"tls_mode", tls_mode},
          {"steps", std::move(steps_json)},
          {"tls", tls ? tls_json(*tls) : json(nullptr)},
          {"capabilities", capabilities},
          {"auth_mechanism", text_or_null(auth_mechanism)},
          {"transcript", transcript},
          {"took_ms", took.count()}};
}

ProbeResult probe_relay(const panel::RelaySettings& relay,
                        const ProbeOptions& options) {
  return ProbeRun(relay, options).run();
}

}  // namespace havenoro::probe
