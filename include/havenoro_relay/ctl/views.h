#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace havenoro::ctl {

/// The daemon's status (status-get) as a table for a person: among the
/// rows, how the last configuration reload went (a refused one with its
/// reason) and a rollback's pin with how to release it.
std::string status_view(const nlohmann::json& status);

/// One domain (domain-get): route, why, relay, last error.
std::string domain_view(const nlohmann::json& domain);

/// Every domain (domain-list), one line each.
std::string domain_list_view(const nlohmann::json& domains);

/// What an apply would change (config-test), as a diff a person reads:
/// per domain the live route and the new one (`+` added, `-` removed,
/// `~` changed; a new password only as "password changed"), then the
/// files written (`+`) and removed (`-`), then what would be rejected.
/// New snippets that a rollback's pin holds back are said in its first
/// line, with how to release the pin.
std::string plan_view(const nlohmann::json& plan);

/// A relay as one phrase: "smtp.example.net:587, STARTTLS required,
/// certificate verified, user 'apikey', password set". Never a password.
/// The outcome of `test`: each step with its time, the certificate, the
/// transcript, the test message, and the verdict.
std::string relay_test_view(const nlohmann::json& result);

std::string relay_text(const nlohmann::json& relay);

}  // namespace havenoro::ctl
