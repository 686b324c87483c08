// Verifies the rendered Exim snippets against golden files, and checks
// candidates with the real Exim (exim -bV, -bP) the way an apply does.

#include "havenoro_relay/render/snippets.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <future>

#include "havenoro_relay/candidate/exim_check.h"
#include "havenoro_relay/render/credential_file.h"
#include "havenoro_relay/util/fd.h"
#include "havenoro_relay/util/process.h"
#include "test_dir.h"

namespace havenoro {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::write_text;

const fs::path kSource = HAVENORO_SOURCE_DIR;
const fs::path kTemplates = kSource / "exim-templates";

render::SnippetParams default_params() {
  return {"system", false, std::chrono::seconds(15), std::chrono::seconds(30)};
}

// Expects each probe to fail, saying what Exim's route debugging showed:
// the route the tests give example.com's relay.
void expect_refused_by_debugging(
    std::initializer_list<std::future<candidate::CheckResult>*> probes) {
  for (auto* probe : probes) {
    auto r = probe->get();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("route debugging shows router havenoro_relay, "
                             "transport havenoro_relay_smtp, hosts "
                             "'relay.havenoro-test.example:587'"),
              std::string::npos)
        << r.message;
  }
}

// An Exim that runs in a mount namespace of its own, each file of `binds`
// mounted over the system file named beside it: the name service a check
// meets is the test's, not the machine's. Needs root.
fs::path exim_with_files(
    const fs::path& dir, const std::string& name,
    const std::vector<std::pair<fs::path, std::string>>& binds) {
  std::string mounts;
  for (const auto& [file, over] : binds) {
    mounts += "mount --bind " + file.string() + " " + over + " && ";
  }
  fs::path exim = dir / name;
  write_text(exim, "#!/bin/sh\nexec unshare -m sh -c '" + mounts +
                       "exec /usr/sbin/exim4 \"$@\"' exim \"$@\"\n");
  fs::permissions(exim, fs::perms(0755));
  return exim;
}

// Verifies that the rendered snippets equal the golden files, so that a
// template change shows up as a diff (regenerate with
// tests/golden/regenerate.sh after checking the diff).
TEST(Snippets, MatchGoldenFiles) {
  auto set = render::render_snippets(kTemplates, default_params());
  for (const auto& [name, text] : set) {
    EXPECT_EQ(text, read_text(kSource / "tests/golden" / name)) << name;
  }
  EXPECT_EQ(render::render_generation_conf(
                kTemplates, "/etc/exim4/havenoro-relay/generations/7",
                "/etc/exim4/havenoro-relay", 7),
            read_text(kSource / "tests/golden/generation.conf"));
}

// Verifies that no domain and no secret can reach a snippet: the same
// parameters give the same text however many domains there are.
TEST(Snippets, HoldNoPerDomainData) {
  auto set = render::render_snippets(kTemplates, default_params());
  for (const auto& [name, text] : set) {
    EXPECT_EQ(text.find("<%"), std::string::npos) << name;
    EXPECT_EQ(text.find("example.com"), std::string::npos) << name;
  }
}

// Verifies that loopback relays are only sent to when allowed (F12).
TEST(Snippets, F12_SelfActionFollowsAllowPrivateRelays) {
  auto p = default_params();
  auto strict = render::render_snippets(kTemplates, p);
  EXPECT_NE(strict["routers.conf"].find("self = defer"), std::string::npos);
  p.allow_private_relays = true;
  auto loose = render::render_snippets(kTemplates, p);
  EXPECT_NE(loose["routers.conf"].find("self = send"), std::string::npos);
}

// Verifies that the cache renders again when a template is rewritten or
// the parameters change, and otherwise gives the same snippets.
TEST(Snippets, CacheFollowsTemplatesAndParameters) {
  testing::TestDir tmp;
  fs::path dir = tmp.path() / "templates";
  fs::copy(kTemplates, dir, fs::copy_options::recursive);
  render::SnippetCache cache;
  auto p = default_params();
  const auto* first = &cache.get(dir, p);
  EXPECT_EQ(*first, render::render_snippets(kTemplates, p));
  EXPECT_EQ(&cache.get(dir, p), first);

  // Rewritten under the same size: the stamp's inode and times differ.
  std::string text = read_text(dir / "routers.conf.mustache");
  text.replace(text.find("havenoro_relay"), 14, "havenoro_RELAY");
  fs::remove(dir / "routers.conf.mustache");
  write_text(dir / "routers.conf.mustache", text);
  EXPECT_NE(cache.get(dir, p).at("routers.conf").find("havenoro_RELAY"),
            std::string::npos);

  p.allow_private_relays = true;
  EXPECT_NE(cache.get(dir, p).at("routers.conf").find("self = send"),
            std::string::npos);

  // A template that stops parsing is an error every time, not an old text.
  write_text(dir / "transports.conf.mustache", "{{#open");
  EXPECT_THROW(cache.get(dir, p), render::RenderError);
  EXPECT_THROW(cache.get(dir, p), render::RenderError);
}

// An Exim main configuration and one rendered generation, in a temporary
// directory, as an apply would check them.
class CandidateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    out_ = tmp_.path() / "out";
    config_ = tmp_.path() / "exim.conf";
    write_text(config_, testing::example_exim_config(kSource, out_));
  }

  fs::path render_generation(const fs::path& templates) {
    auto p = default_params();
    p.allow_private_relays = allow_private_;
    fs::path gen = out_ / "generations" / "1";
    for (const auto& [name, text] : render::render_snippets(templates, p)) {
      write_text(gen / name, text);
    }
    write_text(gen / "generation.conf",
               render::render_generation_conf(templates, gen, out_, 1));
    return gen;
  }

  static void replace_all(std::string& s, const std::string& from,
                          const std::string& to) {
    for (size_t at = s.find(from); at != std::string::npos;
         at = s.find(from, at + to.size())) {
      s.replace(at, from.size(), to);
    }
  }

  candidate::EximChecker checker() const {
    return {"/usr/sbin/exim4", config_};
  }

  testing::TestDir tmp_;
  fs::path out_;
  fs::path config_;
  bool allow_private_ = false;
};

// Verifies that Exim accepts the rendered snippets in the example
// configuration.
TEST_F(CandidateTest, RealEximAcceptsRenderedSnippets) {
  auto result = checker().check_syntax(render_generation(kTemplates));
  EXPECT_TRUE(result.ok) << result.message;
}

// Verifies that a transport with a server-side option is rejected with
// Exim's message and line number (F06).
TEST_F(CandidateTest, F06_ServerOptionInTransportIsRejected) {
  fs::path broken = tmp_.path() / "templates";
  fs::copy(kTemplates, broken);
  std::string t = read_text(broken / "transports.conf.mustache");
  replace_all(t, "  protocol = smtps\n",
              "  protocol = smtps\n  tls_on_connect = true\n");
  write_text(broken / "transports.conf.mustache", t);

  auto result = checker().check_syntax(render_generation(broken));
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.message.find("tls_on_connect"), std::string::npos)
      << result.message;
  EXPECT_NE(result.message.find("line"), std::string::npos) << result.message;
}

// Verifies that a main configuration that does not include the snippets
// is caught, though Exim itself would accept it.
TEST_F(CandidateTest, MainConfigWithoutIncludesIsCaught) {
  write_text(config_, "keep_environment =\nbegin routers\nbegin transports\n");
  auto result = checker().check_syntax(render_generation(kTemplates));
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.message.find("does not include"), std::string::npos)
      << result.message;
}

}  // namespace
}  // namespace havenoro

namespace havenoro {
namespace {

// A rendered generation plus one domain's credential file, as the apply's
// scratch copy holds it.
class DataCheckTest : public CandidateTest {
 protected:
  void SetUp() override {
    CandidateTest::SetUp();
    allow_private_ = true;  // the relay is on loopback (F12)
    gen_ = render_generation(kTemplates);
    relay_.host = "127.0.0.1";
    relay_.port = 2587;
    relay_.username = "user@example.com";
    relay_.password = " p^ss:${run{/bin/true}}\"} ";
    file_ = out_ / "domains/example.com/smtp_relay.conf";
    write_text(file_, render::render_credential_file("example.com", relay_));
  }

  candidate::ExpectedRelay expected() const {
    return {"example.com", file_, render::route_of(relay_), relay_.username,
            relay_.password};
  }

  // Routes example.com to host:port and asks the probe whether Exim
  // routes it to `expected` ("host:port").
  candidate::CheckResult probe(const std::string& host, int port,
                               const std::string& expected) {
    relay_.host = host;
    relay_.port = port;
    write_text(file_, render::render_credential_file("example.com", relay_));
    return checker().check_route(
        gen_, out_,
        {"example.com", "havenoro_relay", "havenoro_relay_smtp", expected});
  }

  fs::path gen_;
  fs::path file_;
  panel::RelaySettings relay_;
};

// Verifies that Exim's own lookup returns the stored password byte for
// byte, and that a mismatch is reported without quoting it (F08, F15).
TEST_F(DataCheckTest, F15_LookupsReturnWhatThePanelStored) {
  auto ok = checker().check_lookups(gen_, out_, {expected()});
  EXPECT_TRUE(ok.ok) << ok.message;

  auto wrong = expected();
  wrong.password = "other";
  auto bad = checker().check_lookups(gen_, out_, {wrong});
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("different password"), std::string::npos);
  EXPECT_EQ(bad.message.find("p^ss"), std::string::npos);
}

// Verifies that checks started ahead of the candidate read its data only
// once their input comes: the files written after the start are the ones
// checked, and a change made after the start is caught.
TEST_F(DataCheckTest, StartedChecksReadTheDataWhenFinished) {
  auto old = relay_;
  fs::remove_all(out_ / "domains/example.com");
  auto lookups = checker().start_lookups(gen_, out_);
  auto route = checker().start_route(gen_, out_, "example.com");

  relay_.port = 2588;
  relay_.password = "written after the start";
  write_text(file_, render::render_credential_file("example.com", relay_));
  auto read = checker().finish_lookups(std::move(lookups), {expected()});
  EXPECT_TRUE(read.ok) << read.message;
  auto routed = checker().finish_route(
      std::move(route), {"example.com", "havenoro_relay", "havenoro_relay_smtp",
                         "127.0.0.1:2588"});
  EXPECT_TRUE(routed.ok) << routed.message;

  // The old settings are not what Exim reads now.
  auto stale = checker().start_lookups(gen_, out_);
  relay_ = old;
  EXPECT_FALSE(checker().finish_lookups(std::move(stale), {expected()}).ok);
}

// Verifies that a started check that is dropped leaves no process.
TEST(StartedCheck, DroppedCheckLeavesNoProcess) {
  pid_t pid;
  {
    auto child = util::start_process({"/bin/sleep", "30"});
    ASSERT_TRUE(child.running());
    // The child's pid is not exposed: find it as our only child.
    pid = ::waitpid(-1, nullptr, WNOHANG);
    EXPECT_EQ(pid, 0) << "the child ended early";
  }
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD) << "a child is left";
}

// Verifies the routing probe: the relay router, transport and port for a
// sender of the domain in any case (F01, F15).
TEST_F(DataCheckTest, F01_RouteProbeFindsTheRelay) {
  candidate::ExpectedRoute route{"example.com", "havenoro_relay",
                                 "havenoro_relay_smtp", "127.0.0.1:2587"};
  auto ok = checker().check_route(gen_, out_, route);
  EXPECT_TRUE(ok.ok) << ok.message;
  route.domain = "EXAMPLE.COM";
  EXPECT_TRUE(checker().check_route(gen_, out_, route).ok);

  route.host_port = "127.0.0.1:465";
  auto bad = checker().check_route(gen_, out_, route);
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("expected port=465"), std::string::npos)
      << bad.message;

  candidate::ExpectedRoute none{"other.example", "", "", ""};
  EXPECT_TRUE(checker().check_route(gen_, out_, none).ok);
}

// Verifies that the probe compares ports as numbers: a port whose digits
// begin or contain the expected one is another port.
TEST_F(DataCheckTest, RouteProbeChecksThePortExactly) {
  EXPECT_TRUE(probe("127.0.0.1", 2525, "127.0.0.1:2525").ok);
  for (const char* expected : {"127.0.0.1:25", "127.0.0.1:252"}) {
    auto bad = probe("127.0.0.1", 2525, expected);
    EXPECT_FALSE(bad.ok) << expected;
    EXPECT_NE(bad.message.find("port=2525"), std::string::npos) << bad.message;
  }
  auto bad = probe("127.0.0.1", 25, "127.0.0.1:2525");
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("expected port=2525"), std::string::npos)
      << bad.message;
}

// Verifies that the probe checks the host Exim routes to: another address,
// or an address that is not the expected name's, fails and names both; a
// name in another case or an IPv6 address in another spelling passes.
TEST_F(DataCheckTest, RouteProbeChecksTheHost) {
  auto bad = probe("127.0.0.2", 2587, "127.0.0.1:2587");
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("expected host 127.0.0.1 port=2587"),
            std::string::npos)
      << bad.message;
  EXPECT_NE(bad.message.find("127.0.0.2"), std::string::npos) << bad.message;

  // The name resolves (from /etc/hosts) to 127.0.0.1, not to 127.0.0.2.
  EXPECT_FALSE(probe("127.0.0.2", 2587, "localhost:2587").ok);
  EXPECT_TRUE(probe("localhost", 2587, "LOCALHOST:2587").ok);
  EXPECT_TRUE(probe("::1", 2587, "[0:0::1]:2587").ok);
  EXPECT_FALSE(probe("::1", 2587, "[::2]:2587").ok);
}

// Verifies the reading of `exim -bt` output as Exim 4.96 prints it: names
// and addresses padded, one line per address, the name the resolver
// returned (here a CNAME's target), and a relay that does not resolve.
TEST_F(DataCheckTest, RouteReportReadsEximsLines) {
  auto r = candidate::parse_route_report(
      "probe@havenoro-probe.invalid\n"
      "  router = havenoro_relay, transport = havenoro_relay_smtp\n"
      "  host Canonical.Test [::1]       port=587\n"
      "  host Canonical.Test [127.0.0.6] port=587\n");
  EXPECT_EQ(r.router, "havenoro_relay");
  EXPECT_EQ(r.transport, "havenoro_relay_smtp");
  ASSERT_EQ(r.hosts.size(), 2u);
  EXPECT_EQ(r.hosts[0].name, "Canonical.Test");
  EXPECT_EQ(r.hosts[0].address, "::1");
  EXPECT_EQ(r.hosts[1].address, "127.0.0.6");
  EXPECT_EQ(r.hosts[1].port, 587);

  auto none = candidate::parse_route_report(
      "probe@havenoro-probe.invalid cannot be resolved at this time: lookup "
      "of host \"smtp.example.net\" failed in havenoro_default router\n");
  EXPECT_EQ(none.router, "");
  EXPECT_TRUE(none.hosts.empty());
  EXPECT_EQ(none.unresolved_host, "smtp.example.net");
  EXPECT_EQ(none.unresolved_router, "havenoro_default");

  auto slow = candidate::parse_route_report(
      "probe@havenoro-probe.invalid cannot be resolved at this time: host "
      "lookup for smtp.example.net did not complete (DNS timeout?)\n");
  EXPECT_EQ(slow.router, "");
  EXPECT_EQ(slow.unresolved_router, "");
  EXPECT_EQ(slow.timed_out_host, "smtp.example.net");
}

// Verifies that a relay name that does not resolve passes only when
// Exim's route debugging shows the expected router, transport and host
// list: Exim's answer names the router and host, not the port or the
// transport. The name service is /etc/hosts alone, without the name.
TEST_F(DataCheckTest, UnresolvedRelayPassesOnlyForItsOwnRoute) {
  if (geteuid() != 0) GTEST_SKIP() << "a mount namespace needs root";
  fs::path dir = tmp_.path();
  write_text(dir / "nsswitch.conf", "hosts: files\n");
  write_text(dir / "hosts", "127.0.0.1 localhost\n");
  candidate::EximChecker files_only{
      exim_with_files(dir, "exim-files-only",
                      {{dir / "nsswitch.conf", "/etc/nsswitch.conf"},
                       {dir / "hosts", "/etc/hosts"}}),
      config_};
  relay_.host = "relay.havenoro-test.example";
  relay_.port = 587;
  write_text(file_, render::render_credential_file("example.com", relay_));
  auto route = [&](std::string transport, std::string expected) {
    return std::async(std::launch::async, [=, &files_only, this] {
      return files_only.check_route(
          gen_, out_, {"example.com", "havenoro_relay", transport, expected});
    });
  };
  const std::string smtp = "havenoro_relay_smtp";
  auto ok = route(smtp, "relay.havenoro-test.example:587");
  auto other_host = route(smtp, "other.havenoro-test.example:587");
  auto other_port = route(smtp, "relay.havenoro-test.example:465");
  auto other_transport =
      route("havenoro_relay_smtps", "relay.havenoro-test.example:587");
  auto passed = ok.get();
  EXPECT_TRUE(passed.ok) << passed.message;
  expect_refused_by_debugging({&other_host, &other_port, &other_transport});
}

// Verifies that a relay name whose DNS lookup times out passes only when
// Exim's route debugging shows the expected router, transport and host
// list (Exim's own answer names none of them): a resolver's hiccup must
// not fail the apply, nor let a wrong route through. The resolver is a
// loopback socket that nobody reads, put in place for Exim alone by a
// mount namespace.
TEST_F(DataCheckTest, RelayNameTimingOutPassesOnlyForItsOwnHost) {
  if (geteuid() != 0) GTEST_SKIP() << "a mount namespace needs root";
  util::UniqueFd silent{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(53);
  ASSERT_EQ(inet_pton(AF_INET, "127.53.0.1", &at.sin_addr), 1);
  ASSERT_EQ(::bind(silent.get(), reinterpret_cast<sockaddr*>(&at), sizeof at),
            0)
      << std::strerror(errno);
  fs::path resolv = tmp_.path() / "resolv.conf";
  write_text(resolv, "nameserver 127.53.0.1\noptions timeout:1 attempts:1\n");
  candidate::EximChecker without_dns{
      exim_with_files(tmp_.path(), "exim-without-dns",
                      {{resolv, "/etc/resolv.conf"}}),
      config_};

  relay_.host = "relay.havenoro-test.example";
  relay_.port = 587;
  write_text(file_, render::render_credential_file("example.com", relay_));
  // Each probe waits for the resolver twice: they run side by side.
  auto route = [&](std::string router, std::string transport,
                   std::string expected) {
    return std::async(std::launch::async, [=, &without_dns, this] {
      return without_dns.check_route(
          gen_, out_, {"example.com", router, transport, expected});
    });
  };
  const std::string relay = "havenoro_relay";
  const std::string smtp = "havenoro_relay_smtp";
  auto ok = route(relay, smtp, "relay.havenoro-test.example:587");
  auto other_host = route(relay, smtp, "other.havenoro-test.example:587");
  auto other_port = route(relay, smtp, "relay.havenoro-test.example:465");
  auto other_transport =
      route(relay, "havenoro_relay_smtps", "relay.havenoro-test.example:587");
  auto other_router =
      route("havenoro_default", smtp, "relay.havenoro-test.example:587");
  auto no_relay = route("", "", "");

  auto passed = ok.get();
  EXPECT_TRUE(passed.ok) << passed.message;
  expect_refused_by_debugging(
      {&other_host, &other_port, &other_transport, &other_router});
  auto unrelayed = no_relay.get();
  EXPECT_FALSE(unrelayed.ok);
  EXPECT_NE(unrelayed.message.find("routed to a havenoro relay"),
            std::string::npos)
      << unrelayed.message;

  // A route of two hosts, the expected one among them: Exim stops at the
  // first lookup that times out, so only the whole list tells.
  write_text(file_,
             "route: 127.0.0.1:2599;relay.havenoro-test.example:587\n"
             "transport: havenoro_relay_smtp\n");
  auto two = route(relay, smtp, "relay.havenoro-test.example:587").get();
  EXPECT_FALSE(two.ok);
  EXPECT_NE(two.message.find("hosts '127.0.0.1:2599;"), std::string::npos)
      << two.message;
}

// Verifies that a probe whose lookup timed out is judged by its second
// run when the name resolves by then: a resolver that answers again is
// not a failure, and the second run's route is checked as any other. The
// first Exim process finds no resolver; the second finds the name in
// /etc/hosts.
TEST_F(DataCheckTest, TimedOutProbeIsJudgedByItsSecondRun) {
  if (geteuid() != 0) GTEST_SKIP() << "a mount namespace needs root";
  fs::path dir = tmp_.path();
  write_text(dir / "resolv.conf",
             "nameserver 127.53.0.2\n"
             "options timeout:1 attempts:1\n");
  write_text(dir / "hosts",
             "127.0.0.1 localhost\n"
             "127.0.0.1 relay.havenoro-test.example\n");
  // 127.53.0.2 has no socket: each query is refused at once, and glibc
  // reports a refused resolver as a temporary failure, as a timeout.
  fs::path exim = dir / "exim-then-hosts";
  write_text(exim,
             "#!/bin/sh\n"
             "d=" +
                 dir.string() +
                 "\n"
                 "if [ -e \"$d/ran\" ]; then bind=\"$d/hosts /etc/hosts\";\n"
                 "else bind=\"$d/resolv.conf /etc/resolv.conf\"; touch "
                 "\"$d/ran\"; fi\n"
                 "exec unshare -m sh -c 'mount --bind $0 $1 && shift && "
                 "exec /usr/sbin/exim4 \"$@\"' $bind \"$@\"\n");
  fs::permissions(exim, fs::perms(0755));
  candidate::EximChecker flaky{exim, config_};
  relay_.host = "relay.havenoro-test.example";
  relay_.port = 587;
  write_text(file_, render::render_credential_file("example.com", relay_));

  auto ok =
      flaky.check_route(gen_, out_,
                        {"example.com", "havenoro_relay", "havenoro_relay_smtp",
                         "relay.havenoro-test.example:587"});
  EXPECT_TRUE(ok.ok) << ok.message;

  fs::remove(dir / "ran");
  auto bad =
      flaky.check_route(gen_, out_,
                        {"example.com", "havenoro_relay", "havenoro_relay_smtp",
                         "relay.havenoro-test.example:465"});
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("expected port=465"), std::string::npos)
      << bad.message;
  // The message quotes Exim's answer, not its debugging.
  EXPECT_EQ(bad.message.find("-------->"), std::string::npos) << bad.message;
  EXPECT_EQ(bad.message.find("calling"), std::string::npos) << bad.message;
}

// Verifies the reading of Exim's route debugging: the router that
// deferred, with the transport and host of that router, not of the one
// before it.
TEST(RouteDebug, NamesTheRouterThatDeferred) {
  auto d = candidate::parse_deferred_route(
      "--------> havenoro_relay router <--------\n"
      "expanded list of hosts = '<;first.example:465' options = 'byname'\n"
      "set transport havenoro_relay_smtps\n"
      "host=first.example port=465\n"
      "havenoro_relay router declined for probe@havenoro-probe.invalid\n"
      "--------> havenoro_default router <--------\n"
      "havenoro_default router called for probe@havenoro-probe.invalid\n"
      "original list of hosts = '<;slow.example:2525' options = 'byname'\n"
      "expanded list of hosts = '<;slow.example:2525' options = 'byname'\n"
      "set transport havenoro_relay_smtp\n"
      "finding IP address for slow.example:2525\n"
      "host=slow.example port=2525\n"
      "calling host_find_byname\n"
      "havenoro_default router: defer for probe@havenoro-probe.invalid\n"
      "  message: host lookup for slow.example did not complete (DNS "
      "timeout?)\n");
  EXPECT_EQ(d.router, "havenoro_default");
  EXPECT_EQ(d.transport, "havenoro_relay_smtp");
  EXPECT_EQ(d.hosts, "slow.example:2525");

  EXPECT_EQ(candidate::parse_deferred_route("routing a@b\n").router, "");
}

// Verifies that a loopback relay is refused by the routing probe when
// private relays are not allowed (F12).
TEST_F(DataCheckTest, F12_LoopbackRelayFailsTheProbeWhenNotAllowed) {
  allow_private_ = false;
  gen_ = render_generation(kTemplates);
  candidate::ExpectedRoute route{"example.com", "havenoro_relay",
                                 "havenoro_relay_smtp", "127.0.0.1:2587"};
  auto bad = checker().check_route(gen_, out_, route);
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("local host"), std::string::npos) << bad.message;

  // Deferred by a havenoro router, for a sender that should have none:
  // Exim's answer names no router, its route debugging does.
  auto unrelayed =
      checker().check_route(gen_, out_, {"example.com", "", "", ""});
  EXPECT_FALSE(unrelayed.ok);
  EXPECT_NE(unrelayed.message.find("routed to a havenoro relay"),
            std::string::npos)
      << unrelayed.message;
}

}  // namespace
}  // namespace havenoro
