#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "havenoro_relay/panel/panel_reader.h"

namespace havenoro::model {

/// Which way a hosted domain's outgoing mail goes.
enum class Route {
  kRelay,      ///< through the domain's own relay
  kDefault,    ///< like system mail: server-wide relay, else direct
  kSuspended,  ///< never through any relay
};

/// The name a route has in status output and logs.
const char* route_name(Route route);

/// One hosted domain's effective route and why it has it.
struct DomainRoute {
  std::string domain;
  std::string user;
  Route route = Route::kDefault;
  std::optional<panel::RelaySettings> relay;  ///< set for Route::kRelay
  std::string reason;
};

/// A setting that was rejected, or accepted with a warning. Names the
/// domain (empty for the server-wide relay) and the field.
struct Problem {
  std::string domain;
  std::string user;
  std::string field;
  std::string message;

  /// One line fit for an admin: "domain 'x' (user bob): field: message".
  std::string text() const;
};

/// What the panel's settings mean for relaying, after validation.
struct RelayModel {
  std::map<std::string, DomainRoute> domains;  ///< accepted domains
  std::optional<panel::RelaySettings> server_relay;
  bool server_rejected = false;  ///< conf/mail.json could not be used
  std::vector<Problem> problems;
  std::vector<Problem> warnings;

  size_t count(Route route) const;
};

/// Builds the model from a snapshot. A domain with a bad file, a domain of
/// a user whose user.json is bad, and a domain that two users both claim
/// are left out and reported; everything else is kept.
RelayModel build_relay_model(const panel::PanelSnapshot& snapshot);

}  // namespace havenoro::model
