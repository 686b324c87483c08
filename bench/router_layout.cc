#include "router_layout.h"

#include <fmt/format.h>

#include <stdexcept>

#include "exim_fixture.h"

namespace havenoro::bench {
namespace {

namespace fs = std::filesystem;

// Exim driver names: letters, digits and underscores.
std::string driver_name(size_t i) {
  return fmt::format("relay_{}", i);
}

std::string router(size_t i, const GeneratedDomain& d) {
  return fmt::format(
      "{0}:\n"
      "  driver = manualroute\n"
      "  domains = ! +local_domains\n"
      "  senders = *@{1}\n"
      "  route_list = * 192.0.2.{2}::587\n"
      "  transport = {0}_smtp\n"
      "  host_find_failed = defer\n"
      "  self = defer\n\n",
      driver_name(i), d.domain, 1 + i % 254);
}

std::string transport(size_t i, const GeneratedDomain& d) {
  return fmt::format(
      "{0}_smtp:\n"
      "  driver = smtp\n"
      "  port = 587\n"
      "  hosts_require_tls = *\n"
      "  hosts_require_auth = *\n"
      "  tls_verify_hosts = *\n"
      "  tls_sni = smtp.{1}\n"
      "  connect_timeout = 15s\n"
      "  command_timeout = 30s\n\n",
      driver_name(i), d.domain);
}

void insert_after(std::string& text, const std::string& marker,
                  const std::string& block) {
  auto at = text.find(marker);
  if (at == std::string::npos) {
    throw std::runtime_error("exim configuration has no '" + marker + "'");
  }
  text.insert(at + marker.size(), block);
}

}  // namespace

void write_router_per_domain_config(
    const fs::path& base, const fs::path& file,
    const std::vector<const GeneratedDomain*>& relays) {
  std::string text = read_text(base);
  std::string routers = "\n";
  std::string transports = "\n";
  std::string credentials;
  for (size_t i = 0; i < relays.size(); ++i) {
    routers += router(i, *relays[i]);
    transports += transport(i, *relays[i]);
    credentials +=
        fmt::format("{}: user{} secret{}\n", relays[i]->domain, i, i);
  }
  fs::path creds = file.parent_path() / (file.stem().string() + ".credentials");
  write_text(creds, credentials, 0644);
  std::string auth = fmt::format(
      "\nrelay_plain:\n"
      "  driver = plaintext\n"
      "  public_name = PLAIN\n"
      "  client_send = ^${{extract{{1}}{{ "
      "}}{{${{lookup{{$sender_address_domain}}"
      "lsearch{{{0}}}}}}}}}^${{extract{{2}}{{ }}{{${{lookup{{"
      "$sender_address_domain}}lsearch{{{0}}}}}}}}}\n\n",
      creds.string());
  insert_after(text, "\nbegin routers\n", routers);
  insert_after(text, "\nbegin transports\n", transports);
  insert_after(text, "\nbegin authenticators\n", auth);
  write_text(file, text, 0644);
}

}  // namespace havenoro::bench
