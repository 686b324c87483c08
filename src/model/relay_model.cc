#include "havenoro_relay/model/relay_model.h"

#include <fmt/format.h>

namespace havenoro::model {
namespace {

using panel::DomainEntry;

void add_warnings(RelayModel& model, const DomainEntry& entry) {
  for (const auto& w : entry.settings.warnings) {
    auto colon = w.find(':');
    model.warnings.push_back(
        {entry.stem, entry.user, w.substr(0, colon),
         w.substr(colon == std::string::npos ? w.size() : colon + 2)});
  }
}

DomainRoute route_for(const panel::DomainSettings& d, const std::string& user,
                      bool user_suspended) {
  DomainRoute r{d.domain, user, Route::kDefault, {}, ""};
  if (user_suspended) {
    r.route = Route::kSuspended;
    r.reason = fmt::format("user '{}' is suspended", user);
  } else if (d.suspended) {
    r.route = Route::kSuspended;
    r.reason = "domain is suspended";
  } else if (d.relay) {
    r.route = Route::kRelay;
    r.relay = d.relay;
    r.reason = "relay of its own";
  } else {
    r.reason = "no relay of its own";
  }
  return r;
}

// The same domain under two users is a panel inconsistency; which of the
// two is right cannot be known, so neither gets a relay.
std::map<std::string, std::vector<std::string>> owners_of(
    const panel::PanelSnapshot& snapshot) {
  std::map<std::string, std::vector<std::string>> owners;
  for (const auto& d : snapshot.domains)
    owners[d.stem].push_back(d.user);
  return owners;
}

}  // namespace

const char* route_name(Route route) {
  switch (route) {
    case Route::kRelay:
      return "relay";
    case Route::kDefault:
      return "default";
    case Route::kSuspended:
      return "suspended";
  }
  return "unknown";
}

std::string Problem::text() const {
  std::string subject =
      domain.empty() ? std::string("server-wide relay (conf/mail.json)")
                     : fmt::format("domain '{}' (user {})", domain, user);
  return fmt::format("{}: {}: {}", subject, field, message);
}

size_t RelayModel::count(Route route) const {
  size_t n = 0;
  for (const auto& [name, d] : domains)
    n += d.route == route;
  return n;
}

RelayModel build_relay_model(const panel::PanelSnapshot& snapshot) {
  RelayModel model;
  if (snapshot.server.error) {
    model.server_rejected = true;
    model.problems.push_back(
        {"", "", snapshot.server.error->field, snapshot.server.error->message});
  } else if (snapshot.server.value) {
    model.server_relay = *snapshot.server.value;
    for (const auto& w : snapshot.server.warnings) {
      auto colon = w.find(':');
      model.warnings.push_back(
          {"", "", w.substr(0, colon), w.substr(colon + 2)});
    }
  }

  std::map<std::string, const panel::UserEntry*> users;
  for (const auto& u : snapshot.users)
    users[u.user] = &u;
  auto owners = owners_of(snapshot);

  for (const auto& entry : snapshot.domains) {
    const auto& owned_by = owners[entry.stem];
    const panel::UserEntry* user = users[entry.user];
    if (owned_by.size() > 1) {
      model.problems.push_back(
          {entry.stem, entry.user, "domain",
           fmt::format("is also configured under user(s) {}; relaying it "
                       "for none of them",
                       fmt::join(owned_by, ", "))});
    } else if (!user || user->settings.error) {
      std::string why = user ? user->settings.error->field + " " +
                                   user->settings.error->message
                             : "is missing";
      model.problems.push_back({entry.stem, entry.user, "user.json", why});
    } else if (entry.settings.error) {
      model.problems.push_back({entry.stem, entry.user,
                                entry.settings.error->field,
                                entry.settings.error->message});
    } else {
      add_warnings(model, entry);
      model.domains[entry.stem] = route_for(*entry.settings.value, entry.user,
                                            user->settings.value->suspended);
    }
  }
  return model;
}

}  // namespace havenoro::model
