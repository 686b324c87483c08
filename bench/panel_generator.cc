#include "panel_generator.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>

namespace havenoro::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// SplitMix64: small, fast, and the same sequence on every platform (the
// standard distributions are not, so they are not used here).
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  size_t between(size_t lo, size_t hi) { return lo + next() % (hi - lo + 1); }

 private:
  uint64_t state_;
};

uint64_t mix(uint64_t a, uint64_t b) {
  Random r(a * 0x100000001b3ULL ^ b);
  return r.next();
}

// FNV-1a: a name's hash that does not depend on the standard library.
uint64_t name_hash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

bool has_dkim(const GeneratedDomain& d) {
  return d.variant % 4 == 0;
}

constexpr const char* kWords[] = {"bakery",  "studio", "garden", "travel",
                                  "dental",  "photo",  "law",    "crafts",
                                  "music",   "books",  "coffee", "design",
                                  "fitness", "auto",   "pets",   "cloud"};
constexpr const char* kTlds[] = {"com",   "net", "org", "de", "nl",
                                 "co.uk", "fr",  "io",  "eu", "example"};

// How many domains one hosting account owns: mostly one or two, with a
// long tail of agencies and resellers.
size_t account_size(Random& r) {
  double u = r.unit();
  if (u < 0.55) return 1;
  if (u < 0.80) return r.between(2, 4);
  if (u < 0.95) return r.between(5, 20);
  if (u < 0.99) return r.between(21, 100);
  return r.between(101, 500);
}

DomainKind pick_kind(Random& r, const PanelMix& m) {
  double u = r.unit();
  if (u < m.relay) return DomainKind::kRelay;
  if (u < m.relay + m.suspended) return DomainKind::kSuspended;
  if (u < m.relay + m.suspended + m.broken) return DomainKind::kBroken;
  return DomainKind::kNoRelay;
}

std::string password(const GeneratedDomain& d, unsigned revision) {
  // Printable ASCII with the characters that matter to Exim (':', ' ',
  // '^', '$'), never '^' first (that would only add a warning).
  static const std::string kChars =
      "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789:^ $-_.";
  Random r(mix(name_hash(d.domain), revision));
  std::string p = "P";
  size_t len = 20 + r.next() % 21;
  while (p.size() < len) p += kChars[r.next() % kChars.size()];
  return p;
}

json relay_object(const GeneratedDomain& d, unsigned revision) {
  unsigned v = d.variant;
  std::string host =
      (v % 2 ? "198.51.100." : "192.0.2.") + std::to_string(1 + (v / 2) % 254);
  json relay = {{"enabled", true}, {"host", host}};
  switch (v % 10) {
    case 6:
    case 7:
      relay["port"] = 465;  // auto: TLS from the first byte
      break;
    case 8:
      relay["port"] = 2525;
      relay["security"] = "starttls";
      break;
    case 9:
      // A gateway that accepts the server by its address, without
      // credentials: a save moves it to another port.
      relay["port"] = revision == 0 ? 25 : 26000 + revision % 1000;
      relay["security"] = "none";
      return relay;
    default:
      // Absent means 587; every third save moves it to 2525 and back.
      if (revision % 3 == 2) relay["port"] = 2525;
  }
  relay["username"] = v % 3 ? "apikey" : "mailer@" + d.domain;
  relay["password"] = password(d, revision);
  if (v % 7 == 0) relay["verify_certificate"] = false;
  return relay;
}

json domain_object(const GeneratedDomain& d, unsigned revision) {
  json doc = {{"domain", d.domain}, {"suspended", false}};
  if (has_dkim(d)) {
    doc["dkim"] = {{"enabled", true}, {"selector", "mail"}};
  }
  bool relay = d.kind == DomainKind::kRelay ||
               (d.kind == DomainKind::kUserSuspended && d.variant % 5 == 0) ||
               (d.kind == DomainKind::kSuspended && d.variant % 2 == 0);
  if (relay) {
    doc["smtp_relay"] = relay_object(d, revision);
  } else if (d.variant % 3 == 0) {
    doc["smtp_relay"] = {{"enabled", false}, {"host", "smtp.example.net"}};
  }
  if (d.kind == DomainKind::kSuspended) doc["suspended"] = true;
  if (d.kind == DomainKind::kBroken) {
    doc["smtp_relay"] = relay_object(d, revision);
    switch (d.variant % 4) {
      case 0:
        doc["smtp_relay"]["port"] = 70000;
        break;
      case 1:
        doc["smtp_relay"]["port"] = "587";
        break;
      default:
        doc["smtp_relay"]["host"] = "smtp relay.example";
    }
  }
  return doc;
}

void write_file(const fs::path& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), path);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      throw std::system_error(saved, std::generic_category(), path);
    }
    done += n;
  }
  ::close(fd);
}

void make_dir(const fs::path& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    throw std::system_error(errno, std::generic_category(), path);
  }
}

fs::path mail_dir(const fs::path& root, const std::string& user) {
  return root / "data" / "users" / user / "mail";
}

// One real RSA key for every DKIM domain of a tree: the daemon checks that
// the file is a PEM private key; making thousands of keys would only make
// generating slow.
std::string dkim_key_pem() {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  if (!key) throw std::runtime_error("cannot generate an RSA key");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, len);
  BIO_free(bio);
  EVP_PKEY_free(key);
  return pem;
}

}  // namespace

const char* kind_name(DomainKind kind) {
  switch (kind) {
    case DomainKind::kNoRelay:
      return "no_relay";
    case DomainKind::kRelay:
      return "relay";
    case DomainKind::kSuspended:
      return "suspended";
    case DomainKind::kUserSuspended:
      return "user_suspended";
    case DomainKind::kBroken:
      return "broken";
  }
  return "unknown";
}

size_t GeneratedPanel::count(DomainKind kind) const {
  return std::count_if(domains.begin(), domains.end(),
                       [kind](const auto& d) { return d.kind == kind; });
}

std::vector<const GeneratedDomain*> GeneratedPanel::relays() const {
  std::vector<const GeneratedDomain*> out;
  for (const auto& d : domains) {
    if (d.kind == DomainKind::kRelay) out.push_back(&d);
  }
  return out;
}

std::string domain_file_text(const GeneratedDomain& d, unsigned revision) {
  std::string text = domain_object(d, revision).dump(2) + "\n";
  // Half of the broken files the panel (or an editor) left half-written.
  if (d.kind == DomainKind::kBroken && d.variant % 8 == 3) {
    text.resize(text.size() / 2);
  }
  return text;
}

fs::path domain_path(const fs::path& root, const GeneratedDomain& d) {
  return mail_dir(root, d.user) / (d.domain + ".json");
}

void save_domain(const fs::path& root, const GeneratedDomain& d,
                 unsigned revision) {
  fs::path file = domain_path(root, d);
  fs::path temp =
      file.parent_path() / ("." + file.filename().string() + ".tmp");
  write_file(temp, domain_file_text(d, revision));
  if (::rename(temp.c_str(), file.c_str()) != 0) {
    throw std::system_error(errno, std::generic_category(), file);
  }
}

GeneratedPanel generate_panel(const fs::path& root, const PanelSpec& spec) {
  GeneratedPanel panel;
  panel.root = root;
  Random r(spec.seed);
  for (const char* dir : {"", "conf", "data", "data/users"}) {
    make_dir(root / dir);
  }
  json mail = json::object();
  if (spec.mix.server_relay) {
    mail["smtp_relay"] = {{"enabled", true},
                          {"host", "203.0.113.25"},
                          {"port", 587},
                          {"username", "server"},
                          {"password", "S3rver relay:pw"}};
  }
  write_file(root / "conf/mail.json", mail.dump(2) + "\n");

  std::string dkim;
  size_t made = 0;
  while (made < spec.domains) {
    std::string user = "u" + std::to_string(panel.users.size() + 1);
    bool suspended = r.unit() < spec.mix.suspended_users;
    size_t owns = std::min(account_size(r), spec.domains - made);
    make_dir(root / "data/users" / user);
    make_dir(mail_dir(root, user));
    write_file(root / "data/users" / user / "user.json",
               json{{"user", user}, {"suspended", suspended}}.dump(2) + "\n");
    panel.users.push_back(user);
    panel.suspended_users += suspended;
    for (size_t i = 0; i < owns; ++i, ++made) {
      GeneratedDomain d;
      d.user = user;
      d.domain = std::string(kWords[r.next() % std::size(kWords)]) + "-" +
                 std::to_string(made + 1) + "." +
                 kTlds[r.next() % std::size(kTlds)];
      d.kind = pick_kind(r, spec.mix);
      if (suspended) d.kind = DomainKind::kUserSuspended;
      d.variant = static_cast<unsigned>(r.next() % 1000003);
      write_file(domain_path(root, d), domain_file_text(d, 0));
      if (has_dkim(d)) {
        if (dkim.empty()) dkim = dkim_key_pem();
        write_file(mail_dir(root, user) / (d.domain + ".dkim.pem"), dkim);
      }
      panel.domains.push_back(std::move(d));
    }
  }
  return panel;
}

}  // namespace havenoro::bench
