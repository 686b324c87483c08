#pragma once

#include <array>
#include <map>
#include <memory>
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
  /// Mail through a relay (its own or the server-wide one) is signed with
  /// this selector and key; empty when DKIM is off or the domain suspended.
  std::string dkim_selector;
  std::optional<panel::KeyFile> dkim_key;  ///< none: no signing
};

/// A setting that was rejected, or accepted with a warning. Names the
/// domain (empty for the server-wide relay) and the field.
struct Problem {
  std::string domain;
  std::string user;
  std::string field;
  std::string message;
  /// True when the domain keeps the relay it last had live: its settings
  /// are unreadable or invalid, which says nothing about what the panel
  /// wants. False when the panel is inconsistent (two owners).
  bool keep_live = true;

  /// One line fit for an admin: "domain 'x' (user bob): field: message".
  std::string text() const;
};

/// What the panel's settings mean for relaying, after validation.
struct RelayModel {
  std::map<std::string, DomainRoute> domains;            ///< accepted domains
  std::map<std::string, std::vector<Problem>> rejected;  ///< by domain
  std::map<std::string, std::vector<Problem>> warnings;  ///< "" = server
  std::optional<panel::RelaySettings> server_relay;
  std::optional<Problem> server_problem;  ///< conf/mail.json is unusable

  /// Every rejection, the server-wide relay's first, then by domain.
  std::vector<Problem> problems() const;
  /// Every warning, in the same order.
  std::vector<Problem> all_warnings() const;
  /// How many accepted domains have this route; constant time, so that a
  /// status request costs the same at 10 domains as at 100,000.
  size_t count(Route route) const {
    return route_counts[static_cast<size_t>(route)];
  }

  /// How many warnings `warnings` holds in all; constant time too.
  size_t warning_count() const { return warning_total; }

  /// Kept by evaluate_domain() alongside `domains`.
  std::array<size_t, 3> route_counts{};
  /// Kept by evaluate_domain() and evaluate_server() alongside `warnings`.
  size_t warning_total = 0;
};

/// The domain files found for one domain name, by user.
using DomainFiles = std::map<std::string, panel::DomainEntry>;
/// The users found in the panel tree, by name.
using UserIndex = std::map<std::string, panel::UserEntry>;

/// Re-evaluates one domain name into the model: its route, its rejection,
/// or its absence when `files` is null or empty. Costs what one domain
/// costs, whatever the size of the model.
void evaluate_domain(RelayModel& model, const std::string& name,
                     const DomainFiles* files, const UserIndex& users);

/// Re-evaluates the server-wide relay into the model.
void evaluate_server(
    RelayModel& model,
    const panel::Parsed<std::optional<panel::RelaySettings>>& server);

/// Builds the model from a snapshot. A domain with a bad file, a domain of
/// a user whose user.json is bad, and a domain that two users both claim
/// are left out and reported; everything else is kept.
RelayModel build_relay_model(const panel::PanelSnapshot& snapshot);

}  // namespace havenoro::model
