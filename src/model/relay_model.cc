#include "havenoro_relay/model/relay_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace havenoro::model {
namespace {

using panel::DomainEntry;

// Warnings come from the parser as "field: message".
Problem warning(const std::string& domain, const std::string& user,
                const std::string& text) {
  auto colon = text.find(": ");
  if (colon == std::string::npos) return {domain, user, "", text};
  return {domain, user, text.substr(0, colon), text.substr(colon + 2)};
}

DomainRoute route_for(const panel::DomainSettings& d, const std::string& user,
                      bool user_suspended) {
  DomainRoute r;
  r.domain = d.domain;
  r.user = user;
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
  if (d.dkim_enabled && r.route != Route::kSuspended) {
    r.dkim_selector = d.dkim_selector;
    r.dkim_key = d.dkim_key;
  }
  return r;
}

// The problem that keeps one domain file out of the model, if any.
std::optional<Problem> problem_of(const DomainEntry& entry,
                                  const UserIndex& users) {
  auto user = users.find(entry.user);
  if (user == users.end()) {
    return Problem{entry.stem, entry.user, "user.json", "is missing"};
  }
  if (const auto& e = user->second.settings.error) {
    return Problem{entry.stem, entry.user, "user.json",
                   e->field + " " + e->message};
  }
  if (const auto& e = entry.settings.error) {
    return Problem{entry.stem, entry.user, e->field, e->message};
  }
  return {};
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

std::vector<Problem> RelayModel::problems() const {
  std::vector<Problem> all;
  if (server_problem) all.push_back(*server_problem);
  for (const auto& [name, list] : rejected) {
    all.insert(all.end(), list.begin(), list.end());
  }
  return all;
}

std::vector<Problem> RelayModel::all_warnings() const {
  std::vector<Problem> all;
  for (const auto& [name, list] : warnings) {
    all.insert(all.end(), list.begin(), list.end());
  }
  return all;
}

namespace {

// Drops the warnings noted for `name`, keeping the count right.
void forget_warnings(RelayModel& model, const std::string& name) {
  if (auto it = model.warnings.find(name); it != model.warnings.end()) {
    model.warning_total -= it->second.size();
    model.warnings.erase(it);
  }
}

void note_warning(RelayModel& model, const std::string& name, Problem p) {
  model.warnings[name].push_back(std::move(p));
  ++model.warning_total;
}

}  // namespace

void evaluate_domain(RelayModel& model, const std::string& name,
                     const DomainFiles* files, const UserIndex& users) {
  if (auto it = model.domains.find(name); it != model.domains.end()) {
    --model.route_counts[static_cast<size_t>(it->second.route)];
    model.domains.erase(it);
  }
  model.rejected.erase(name);
  forget_warnings(model, name);
  if (!files || files->empty()) return;

  if (files->size() > 1) {
    // Which of the two owners is right cannot be known: neither gets a
    // relay, and the one it had goes too.
    std::vector<std::string> owners;
    for (const auto& [user, entry] : *files) owners.push_back(user);
    for (const auto& user : owners) {
      model.rejected[name].push_back(
          {name, user, "domain",
           fmt::format("is configured under users {}; relaying it for "
                       "none of them",
                       fmt::join(owners, ", ")),
           false});
    }
    return;
  }
  const DomainEntry& entry = files->begin()->second;
  if (auto problem = problem_of(entry, users)) {
    model.rejected[name].push_back(*problem);
    return;
  }
  for (const auto& w : entry.settings.warnings) {
    note_warning(model, name, warning(name, entry.user, w));
  }
  bool user_suspended = users.at(entry.user).settings.value->suspended;
  auto& route = model.domains[name] =
      route_for(*entry.settings.value, entry.user, user_suspended);
  ++model.route_counts[static_cast<size_t>(route.route)];
}

void evaluate_server(
    RelayModel& model,
    const panel::Parsed<std::optional<panel::RelaySettings>>& server) {
  model.server_relay.reset();
  model.server_problem.reset();
  forget_warnings(model, "");
  if (server.error) {
    model.server_problem =
        Problem{"", "", server.error->field, server.error->message};
    return;
  }
  if (server.value) model.server_relay = *server.value;
  for (const auto& w : server.warnings) {
    note_warning(model, "", warning("", "", w));
  }
}

RelayModel build_relay_model(const panel::PanelSnapshot& snapshot) {
  RelayModel model;
  evaluate_server(model, snapshot.server);
  UserIndex users;
  for (const auto& u : snapshot.users) users.emplace(u.user, u);
  std::map<std::string, DomainFiles> by_name;
  for (const auto& d : snapshot.domains) by_name[d.stem].emplace(d.user, d);
  for (const auto& [name, files] : by_name) {
    evaluate_domain(model, name, &files, users);
  }
  return model;
}

}  // namespace havenoro::model
