#!/usr/bin/python3
"""End to end: havenoro-relayd, a real Exim and real relays on loopback.

Each test class builds a panel tree, runs `havenoro-relayd --once` on it
against a private Exim daemon (tests/support/harness.py), sends real mail
through that Exim and asserts what the relays and the MX sink received.
The MX sink stands for the recipient's MX: mail there went out directly.

Field cases from shared/field-cases.md are named test_Fnn_...; each keeps
its expected value as a regression test. Nothing is skipped silently: a
missing binary fails every class.

Run: /usr/bin/python3 tests/integration/test_end_to_end.py [-v] [-k F08]
HAVENORO_RELAYD names the binary (default build/src/daemon/...);
HAVENORO_KEEP_WORKDIR=1 keeps the temporary directories for a post-mortem.
"""

import base64
import collections
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
import unittest
from pathlib import Path

import dkim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import harness as h  # noqa: E402

RCPT = "someone@example.net"

# F08: each must reach the relay byte for byte, through a relay offering
# PLAIN only, LOGIN only, and both ("^^double^" adds a run of carets).
F08_PASSWORDS = [
    "p^ss", "^lead", "a:b::c", "#hash", "{x}", 'q"uote', "it's",
    "back\\slash", "$HOME", "${run{/bin/true}}", " lead", "trail ",
    "pässwörd", "^^double^", "x" + "".join(chr(33 + (i * 7) % 94)
                                           for i in range(199)),
]
assert len(F08_PASSWORDS[-1]) == 200

# F09: usernames that look like paths or addresses are still usernames.
F09_USERNAMES = ["acme/main", "DOM\\user", "user@example.com"]

Sent = collections.namedtuple("Sent", "sender token msgid")


class EndToEnd(unittest.TestCase):
    """Starts the parts a test class shares and stops them after it.

    Every part registers its own class cleanup as it starts, so a failure
    half-way through setUpClass still stops everything already running.
    """

    queue_interval = "15s"
    relayd_overrides = {}
    exim_options = {}

    @classmethod
    def start_parts(cls):
        cls.binary = h.relayd_binary()
        cls.work = h.make_workdir(f"havenoro-{cls.__name__}-")
        if not os.environ.get("HAVENORO_KEEP_WORKDIR"):
            cls.addClassCleanup(h.remove_tree, cls.work)
        cls.relays = []
        cls.runs = []
        cls.sent = {}
        cls.counter = 0
        cls.ca = h.TestCA(cls.work / "ca")
        cls.sink = cls.start_relay("mx-sink", mode="plain", mechanisms="")
        cls.panel = h.PanelTree(cls.work / "panel")
        cls.output_dir = cls.work / "relay-out"
        cls.exim = h.EximInstance(cls.work, cls.output_dir, cls.sink.port,
                                  **cls.exim_options)
        cls.addClassCleanup(cls.exim.stop)
        cls.exim.start(queue_interval=cls.queue_interval)

    @classmethod
    def start_relay(cls, name, **kwargs):
        kwargs.setdefault("ca", cls.ca)
        kwargs.setdefault("check_accounts", True)
        relay = h.Relay(cls.work, name, **kwargs)
        cls.addClassCleanup(relay.stop)
        cls.relays.append(relay)
        return relay

    @classmethod
    def settings(cls, relay, username, password, **kwargs):
        """A relay setting whose credentials that relay will accept."""
        if relay is not None and username:
            relay.add_account(username, password)
        return h.relay_settings(relay, username=username, password=password,
                                **kwargs)

    @classmethod
    def config(cls, **overrides):
        merged = dict(cls.relayd_overrides)
        merged.update(overrides)
        return h.relayd_config(cls.panel, cls.exim, cls.ca, **merged)

    @classmethod
    def apply(cls, **overrides):
        """Runs havenoro-relayd --once and keeps its output for F10."""
        cp = h.run_relayd(cls.binary, cls.config(**overrides), cls.work)
        cls.runs.append(cp)
        return cp

    @classmethod
    def apply_ok(cls, **overrides):
        """Runs havenoro-relayd --once where the tree is all good."""
        cp = cls.apply(**overrides)
        if cp.returncode != 0:
            raise AssertionError(f"havenoro-relayd --once exited "
                                 f"{cp.returncode}:\n{cp.stdout}{cp.stderr}")
        return cp

    @classmethod
    def send(cls, sender, key=None):
        """Sends one message with a token in its subject to find it by."""
        cls.counter += 1
        token = f"havenoro-e2e-{cls.__name__}-{cls.counter:03d}"
        msgid = cls.exim.send(sender, RCPT, f"{token} from <{sender}>")
        sent = Sent(sender, token, msgid)
        cls.sent[key if key is not None else sender] = sent
        return sent

    @classmethod
    def wait_all(cls, timeout=30):
        """Waits until Exim logged an outcome for every message sent."""
        for sent in cls.sent.values():
            if sent.msgid:
                cls.exim.wait_delivery(sent.msgid, timeout)

    # Assertions on where a message went.

    def arrivals(self, sent):
        """(relay, record) for each place that accepted this message.

        Matches on the token and the envelope sender, so a bounce that
        quotes the message is not taken for the message itself.
        """
        want = (sent.sender or "<>").lower()
        out = []
        for relay in self.relays:
            for record in relay.messages_with(sent.token):
                if (record["mail_from"] or "<>").lower() == want:
                    out.append((relay, record))
        return out

    def story(self, sent):
        """What Exim logged about a message, for failure messages."""
        if not sent.msgid:
            return ""
        return "\nExim log:\n  " + "\n  ".join(
            self.exim.message_log(sent.msgid))

    def assertArrivedOnlyAt(self, sent, relay):
        got = self.arrivals(sent)
        names = [r.name for r, _ in got]
        self.assertEqual(names, [relay.name],
                         f"mail from <{sent.sender}> arrived at {names}, "
                         f"expected only {relay.name}{self.story(sent)}")
        return got[0][1]

    def assertRelayedAs(self, sent, relay, username, password):
        """Arrived once, at relay, over TLS, with exactly these bytes."""
        record = self.assertArrivedOnlyAt(sent, relay)
        self.assertEqual(record["username"], username.encode("utf-8"),
                         f"username seen by {relay.name}")
        self.assertEqual(record["password"], password.encode("utf-8"),
                         f"password seen by {relay.name}")
        if relay.mode != "plain":
            self.assertTrue(record["tls"], f"{relay.name}: not over TLS")
        return record

    def assertWentDirect(self, sent):
        self.assertArrivedOnlyAt(sent, self.sink)

    def assertNotAt(self, sent, relay):
        names = [r.name for r, _ in self.arrivals(sent)]
        self.assertNotIn(relay.name, names,
                         f"mail from <{sent.sender}> reached "
                         f"{relay.name}{self.story(sent)}")

    def assertDeliveredBy(self, sent, router, transport):
        kind, line = self.exim.delivery(sent.msgid) or (None, "")
        self.assertEqual(kind, "=>", self.story(sent))
        self.assertEqual(h.log_field(line, "R"), router, line)
        self.assertEqual(h.log_field(line, "T"), transport, line)
        return line

    def stderr_lines(self, cp, *words):
        """stderr lines of a run that contain every one of words."""
        return [line for line in cp.stderr.splitlines()
                if all(w in line for w in words)]

    def summary(self, cp):
        """key=value fields of the run's last stdout line (apply.done)."""
        lines = cp.stdout.strip().splitlines()
        self.assertTrue(lines, f"no stdout; stderr:\n{cp.stderr}")
        last = lines[-1]
        self.assertTrue(last.startswith("apply.done"), last)
        return dict(re.findall(r"(\w+)=(\S+)", last))

    def assertRoute(self, sender, transport, port, host_ip="127.0.0.1"):
        route = self.exim.route(sender, RCPT)
        self.assertEqual(route.returncode, 0, route.text)
        self.assertEqual(route.router, "havenoro_relay", route.text)
        self.assertEqual(route.transport, transport, route.text)
        self.assertEqual([(ip, p) for _, ip, p in route.hosts],
                         [(host_ip, str(port))], route.text)
        return route

    def credential_file(self, domain=None):
        if domain is None:
            return self.output_dir / "default" / "smtp_relay.conf"
        return self.output_dir / "domains" / domain / "smtp_relay.conf"

    def credential_fields(self, domain=None):
        text = self.credential_file(domain).read_text()
        return dict(re.findall(r"^(\w+): ?(.*)$", text, re.M))


class RelayDomainsTest(EndToEnd):
    """Relay domains, no server-wide relay, some domains that must fail.

    One run of the daemon over a tree with good, off, suspended and broken
    domains; then one message per sender, each checked at the relays.
    """

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.starttls = cls.start_relay("relay-starttls")
        cls.tls = cls.start_relay("relay-tls", mode="tls")
        cls.plain_only = cls.start_relay("relay-plain-only",
                                         mechanisms="PLAIN")
        cls.login_only = cls.start_relay("relay-login-only",
                                         mechanisms="LOGIN")
        cls.both = cls.start_relay("relay-both")
        cls.write_tree()
        with h.ArgvWatcher() as watcher:
            cls.first_run = cls.apply()
        cls.argvs = watcher.seen
        for domain in list(cls.relay_domains) + cls.not_relayed:
            if domain not in cls.plain_caret:
                cls.send(f"sender@{domain}", key=domain)
        cls.send("bob@SHOP.EXAMPLE", key="upper")
        cls.send("news@news.example.com", key="not-hosted")
        cls.send("", key="empty")
        cls.wait_all()
        # Last: a failed AUTH leaves a retry record for the relay's host,
        # which holds up the other domains sent to the same relay within
        # the next second (the auth_failed retry rule, F14).
        for domain in sorted(cls.plain_caret):
            cls.send(f"sender@{domain}", key=domain)
        cls.wait_all()

    @classmethod
    def relay_domain(cls, user, domain, relay, username, password, **kw):
        cls.panel.write_domain(user, domain, {"smtp_relay": cls.settings(
            relay, username, password, **kw)})
        cls.relay_domains[domain] = (relay, username, password)

    @classmethod
    def write_tree(cls):
        p = cls.panel
        for user in ("alice", "bob", "dave"):
            p.write_user(user)
        p.write_user("carol", suspended=True)
        p.write_server_relay(None)
        cls.relay_domains = {}
        # Port not 465 and security absent: "auto" means STARTTLS.
        cls.relay_domain("alice", "shop.example", cls.starttls, "apikey",
                         "SG.shop-Secret-7Qx!")
        cls.relay_domain("alice", "tls.example", cls.tls, "tls-user",
                         "Tls-Secret-9Zk#", security="tls")
        for i, password in enumerate(F08_PASSWORDS):
            for mech, relay in cls.f08_relays():
                cls.relay_domain("alice", f"pw{i:02d}-{mech}.example",
                                 relay, f"{mech}{i:02d}", password,
                                 security="starttls")
        for i, username in enumerate(F09_USERNAMES):
            cls.relay_domain("dave", f"user{i}.example", cls.starttls,
                             username, f"F09-Secret-{i}-Pw")
        off = h.relay_settings(cls.starttls, enabled=False, username="off",
                               password="Off-Secret-1Qa")
        p.write_domain("alice", "norelay.example", {})
        p.write_domain("alice", "relayoff.example", {"smtp_relay": off})
        good = h.relay_settings(cls.starttls, username="susp",
                                password="Suspended-Secret-5Rt")
        p.write_domain("bob", "dsusp.example",
                       {"suspended": True, "smtp_relay": good})
        p.write_domain("carol", "carol.example", {"smtp_relay": good})
        cls.rejected = {
            "broken.example": ("smtp_relay.port", {"port": 70000}),
            "port0.example": ("smtp_relay.port", {"port": 0}),
            "portstr.example": ("smtp_relay.port", {"port": "587"}),
            "hostspace.example": ("smtp_relay.host",
                                  {"host": "relay .example"}),
            "hostslash.example": ("smtp_relay.host",
                                  {"host": "relay.example/x"}),
            "hostcrlf.example": ("smtp_relay.host",
                                 {"host": "localhost\r\nroute: x"}),
            "userlf.example": ("smtp_relay.username",
                               {"username": "a\nb"}),
            "passcr.example": ("smtp_relay.password",
                               {"password": "Bad\rSecret-Zq1"}),
            "passnul.example": ("smtp_relay.password",
                                {"password": "Bad\x00Secret-Zq2"}),
            "security.example": ("smtp_relay.security",
                                 {"security": "ssl"}),
        }
        for domain, (_, bad) in cls.rejected.items():
            settings = h.relay_settings(cls.starttls, username="rejected",
                                        password="Rejected-Secret-3Zz")
            settings.update(bad)
            p.write_domain("bob", domain, {"smtp_relay": settings})
        # Half-written by an editor: not a setting until it parses.
        p.write_domain_raw("bob", "halfwritten.example",
                           '{"domain": "halfwritten.example", '
                           '"smtp_relay": {"enabled": true, "host": "loc')
        # AUTH PLAIN is built with "^" for NUL and "^^" for "^": a value
        # that starts with "^" cannot follow a NUL (the run of carets
        # reads the other way round), so these may be refused instead.
        cls.plain_caret = {f"pw{i:02d}-plain.example"
                           for i, pw in enumerate(F08_PASSWORDS)
                           if pw.startswith("^")}
        cls.not_relayed = ["norelay.example", "relayoff.example",
                           "dsusp.example", "carol.example",
                           "halfwritten.example", *cls.rejected]
        cls.secrets = [pw for _, _, pw in cls.relay_domains.values()]
        cls.secrets += ["Off-Secret-1Qa", "Suspended-Secret-5Rt",
                        "Rejected-Secret-3Zz", "Secret-Zq1", "Secret-Zq2"]

    @classmethod
    def f08_relays(cls):
        return (("plain", cls.plain_only), ("login", cls.login_only),
                ("both", cls.both))

    # Exit status and what the run printed.

    def test_exit_status_is_1_when_a_domain_is_rejected(self):
        """verifies that one bad domain makes --once exit 1."""
        self.assertEqual(self.first_run.returncode, 1,
                         self.first_run.stdout + self.first_run.stderr)

    def test_broken_domain_is_reported_by_name_and_field(self):
        """verifies the stderr line names domain, user, field and value."""
        lines = self.stderr_lines(self.first_run, "'broken.example'",
                                  "smtp_relay.port")
        self.assertEqual(len(lines), 1, self.first_run.stderr)
        self.assertIn("70000", lines[0])
        self.assertIn("bob", lines[0])

    def test_F09_bad_fields_are_rejected_for_that_domain_only(self):
        """verifies each bad field is named and only its domain fails."""
        for domain, (field, _) in self.rejected.items():
            with self.subTest(domain=domain):
                lines = self.stderr_lines(self.first_run, f"'{domain}'",
                                          field)
                self.assertTrue(lines, f"no stderr line naming {domain} "
                                f"and {field}:\n{self.first_run.stderr}")
                self.assertFalse(self.credential_file(domain).exists())
                self.assertWentDirect(self.sent[domain])
        self.assertRelayedAs(self.sent["shop.example"], self.starttls,
                             "apikey", "SG.shop-Secret-7Qx!")

    def test_each_problem_is_one_line_on_stderr(self):
        """verifies no stderr line is a fragment: a CR or LF in a value
        must be shown escaped, since the panel shows one line per problem.
        """
        stray = [line for line in self.first_run.stderr.splitlines()
                 if not line.startswith("havenoro-relayd: ")]
        self.assertEqual(stray, [], self.first_run.stderr)

    def test_F09_usernames_with_slash_backslash_and_at_are_accepted(self):
        """verifies such usernames reach the relay unchanged."""
        for i, username in enumerate(F09_USERNAMES):
            with self.subTest(username=username):
                domain = f"user{i}.example"
                self.assertRelayedAs(self.sent[domain], self.starttls,
                                     username, f"F09-Secret-{i}-Pw")

    def test_half_written_domain_file_is_reported_and_not_relayed(self):
        """verifies a file that does not parse relays nothing."""
        self.assertTrue(self.stderr_lines(self.first_run,
                                          "halfwritten.example"),
                        self.first_run.stderr)
        self.assertFalse(self.credential_file("halfwritten.example")
                         .exists())
        self.assertWentDirect(self.sent["halfwritten.example"])

    def test_summary_line_counts_relays(self):
        """verifies apply.done counts the relayed domains."""
        fields = self.summary(self.first_run)
        self.assertEqual(fields.get("relayed"), str(len(self.relay_domains)),
                         self.first_run.stdout)
        self.assertEqual(fields.get("rejected"), str(len(self.rejected) + 1),
                         self.first_run.stdout)

    # Where each message went.

    def test_every_relay_domain_arrives_at_its_relay_only(self):
        """verifies each relay domain's mail arrives once, at its relay."""
        for domain, (relay, user, password) in self.relay_domains.items():
            if domain in self.plain_caret:
                continue  # test_F08_value_plain_cannot_carry_...
            with self.subTest(domain=domain):
                self.assertRelayedAs(self.sent[domain], relay, user,
                                     password)

    def test_starttls_relay_gets_verified_starttls(self):
        """verifies "auto" on a non-465 port uses STARTTLS, certificate
        verified against tls_ca_certificates."""
        sent = self.sent["shop.example"]
        record = self.assertRelayedAs(sent, self.starttls, "apikey",
                                      "SG.shop-Secret-7Qx!")
        self.assertEqual(record["tls_mode"], "starttls")
        line = self.assertDeliveredBy(sent, "havenoro_relay",
                                      "havenoro_relay_smtp")
        self.assertEqual(h.log_field(line, "CV"), "yes", line)

    def test_F05_implicit_tls_on_another_port(self):
        """verifies "security": "tls" speaks TLS from the first byte on a
        port that is not 465."""
        sent = self.sent["tls.example"]
        record = self.assertRelayedAs(sent, self.tls, "tls-user",
                                      "Tls-Secret-9Zk#")
        self.assertEqual(record["tls_mode"], "implicit")
        line = self.assertDeliveredBy(sent, "havenoro_relay",
                                      "havenoro_relay_smtps")
        self.assertEqual(h.log_field(line, "CV"), "yes", line)

    def test_F07_relay_offering_only_plain(self):
        """verifies a PLAIN-only relay authenticates and delivers."""
        sent = self.sent["pw00-plain.example"]
        record = self.assertArrivedOnlyAt(sent, self.plain_only)
        self.assertEqual(record["auth_mechanism"], "PLAIN")
        line = self.assertDeliveredBy(sent, "havenoro_relay",
                                      "havenoro_relay_smtp")
        self.assertEqual(h.log_field(line, "A"), "havenoro_plain", line)

    def test_F07_relay_offering_only_login(self):
        """verifies a LOGIN-only relay authenticates and delivers."""
        sent = self.sent["pw00-login.example"]
        record = self.assertArrivedOnlyAt(sent, self.login_only)
        self.assertEqual(record["auth_mechanism"], "LOGIN")
        line = self.assertDeliveredBy(sent, "havenoro_relay",
                                      "havenoro_relay_smtp")
        self.assertEqual(h.log_field(line, "A"), "havenoro_login", line)

    def test_F08_passwords_reach_the_relay_byte_for_byte(self):
        """verifies every F08 password arrives unchanged over LOGIN and
        over a relay offering both, and over PLAIN where PLAIN can carry
        it. The relays check credentials, so a mangled one is a 535."""
        for i, password in enumerate(F08_PASSWORDS):
            for mech, relay in self.f08_relays():
                domain = f"pw{i:02d}-{mech}.example"
                if domain in self.plain_caret:
                    continue
                with self.subTest(password=password, mechanism=mech):
                    self.assertRelayedAs(self.sent[domain], relay,
                                         f"{mech}{i:02d}", password)

    def test_F08_value_plain_cannot_carry_is_delivered_or_refused(self):
        """verifies a password starting with "^" on a PLAIN-only relay is
        either delivered byte for byte or refused with a clear reason,
        never sent altered or deferred in silence."""
        for domain in sorted(self.plain_caret):
            relay, user, password = self.relay_domains[domain]
            with self.subTest(password=password):
                if self.arrivals(self.sent[domain]):
                    self.assertRelayedAs(self.sent[domain], relay, user,
                                         password)
                    continue
                self.assertTrue(
                    self.stderr_lines(self.first_run, f"'{domain}'",
                                      "smtp_relay.password"),
                    f"{domain}: not delivered{self.story(self.sent[domain])}"
                    f"\nand not refused:\n{self.first_run.stderr}")

    def test_F10_credential_file_holds_exactly_the_stored_values(self):
        """verifies saved equals stored: base64 of the panel's bytes."""
        for domain, (relay, user, password) in self.relay_domains.items():
            if domain in self.plain_caret and \
                    not self.credential_file(domain).exists():
                continue  # refused, as the F08 test allows
            with self.subTest(domain=domain):
                fields = self.credential_fields(domain)
                self.assertEqual(fields.get("username"), h.b64(user))
                self.assertEqual(fields.get("password"), h.b64(password))
                self.assertEqual(fields.get("auth"), "yes")
                self.assertEqual(fields.get("verify"), "yes")
                self.assertEqual(fields.get("tls"), "required")
                self.assertTrue(fields.get("route", "").endswith(
                    f":{relay.port}"), fields)

    def test_F01_sender_domain_in_any_case(self):
        """verifies bob@SHOP.EXAMPLE takes shop.example's relay."""
        self.assertRelayedAs(self.sent["upper"], self.starttls, "apikey",
                             "SG.shop-Secret-7Qx!")
        for sender in ("bob@shop.example", "bob@SHOP.EXAMPLE",
                       "bob@Shop.Example"):
            with self.subTest(sender=sender):
                self.assertRoute(sender, "havenoro_relay_smtp",
                                 self.starttls.port)

    def test_F01_probe_shows_the_relay_route_for_every_relay_domain(self):
        """verifies `exim -bt` routes every relay domain to its relay."""
        for domain, (relay, _, _) in self.relay_domains.items():
            with self.subTest(domain=domain):
                if domain in self.plain_caret and \
                        not self.credential_file(domain).exists():
                    continue  # refused, as the F08 test allows
                transport = ("havenoro_relay_smtps" if relay.mode == "tls"
                             else "havenoro_relay_smtp")
                self.assertRoute(f"x@{domain}", transport, relay.port)

    def test_F01_nothing_in_the_panic_log(self):
        """verifies no taint or expansion error reached the panic log."""
        self.assertEqual(self.exim.panics(), [])

    def test_F02_hosted_domain_without_relay_goes_out_directly(self):
        """verifies no relay and relay off go direct without one."""
        for domain in ("norelay.example", "relayoff.example"):
            with self.subTest(domain=domain):
                self.assertWentDirect(self.sent[domain])
                self.assertDeliveredBy(self.sent[domain], "direct",
                                       "remote_smtp")

    def test_F02_sender_not_hosted_goes_out_directly(self):
        """verifies a non-hosted sender goes direct without a default."""
        self.assertWentDirect(self.sent["not-hosted"])

    def test_F03_empty_sender_goes_out_directly(self):
        """verifies MAIL FROM:<> goes direct without a default relay."""
        self.assertWentDirect(self.sent["empty"])

    def test_suspended_user_and_domain_are_not_relayed(self):
        """verifies a suspended user's or domain's relay is not used."""
        for domain in ("carol.example", "dsusp.example"):
            with self.subTest(domain=domain):
                self.assertNotAt(self.sent[domain], self.starttls)
                self.assertWentDirect(self.sent[domain])
                self.assertFalse(self.credential_file(domain).exists())

    def test_broken_domain_is_not_relayed(self):
        """verifies the port-70000 domain's mail does not use its relay."""
        self.assertNotAt(self.sent["broken.example"], self.starttls)

    # What is written, and what is not.

    def test_credential_files_are_0640_root_and_exim_group(self):
        """verifies Exim's delivery user can read them and no one else."""
        gid = grp.getgrnam(h.EXIM_USER).gr_gid
        for domain in self.relay_domains:
            if domain in self.plain_caret and \
                    not self.credential_file(domain).exists():
                continue  # refused, as the F08 test allows
            with self.subTest(domain=domain):
                for path, mode in ((self.credential_file(domain), 0o640),
                                   (self.credential_file(domain).parent,
                                    0o750)):
                    st = path.stat()
                    self.assertEqual(stat.S_IMODE(st.st_mode), mode, path)
                    self.assertEqual((st.st_uid, st.st_gid), (0, gid), path)

    def test_output_layout_follows_the_documentation(self):
        """verifies current -> generations/N holding the four snippets."""
        current = self.output_dir / "current"
        self.assertTrue(current.is_symlink())
        target = os.readlink(current)
        self.assertRegex(target, r"^(.*/)?generations/\d+$")
        for name in ("generation.conf", "routers.conf", "transports.conf",
                     "authenticators.conf"):
            self.assertTrue((current / name).is_file(), name)
        text = (current / "generation.conf").read_text()
        self.assertIn(str((self.output_dir / "generations").resolve()),
                      text)

    def test_F10_passwords_appear_nowhere_but_credential_files(self):
        """verifies no password, raw or base64, in output, logs, argv,
        `exim -bP` or any other file the daemon wrote."""
        needles = []
        for password in self.secrets:
            raw = password.encode("utf-8")
            if len(raw) >= 8:
                needles.append(("raw", password, raw))
            if len(raw) >= 6:
                needles.append(("base64", password, h.b64(raw).encode()))
        places = {}
        for i, cp in enumerate(self.runs):
            places[f"run {i} stdout"] = cp.stdout.encode()
            places[f"run {i} stderr"] = cp.stderr.encode()
        for i, argv in enumerate(sorted(self.argvs)):
            places[f"argv {argv[:60]!r}"] = argv
        for args in (("-bP",), ("-bP", "routers"), ("-bP", "transports"),
                     ("-bP", "authenticators")):
            cp = self.exim.exim(*args)
            places[" ".join(("exim",) + args)] = (cp.stdout +
                                                  cp.stderr).encode()
        credential = re.compile(r"^(domains/[^/]+|default)/smtp_relay\.conf$")
        for top in (self.output_dir, self.exim.dir):
            for path in top.rglob("*"):
                rel = str(path.relative_to(top))
                if top == self.output_dir and credential.match(rel):
                    continue
                if path.is_file() and not path.is_symlink():
                    places[str(path)] = path.read_bytes()
        leaks = [f"{kind} of {password!r} in {place}"
                 for place, data in places.items()
                 for kind, password, needle in needles if needle in data]
        self.assertEqual(leaks, [])
        self.assertGreater(len(self.argvs), 0)


class ServerWideRelayTest(EndToEnd):
    """A server-wide relay beside a domain relay, all-good tree.

    Also the place for the runs that must change nothing, and for F04: the
    ways mail enters. For those, Exim lets mail clients authenticate
    (SUBMITTER) and keeps own.example's mailboxes on this server: it is in
    local_domains, as an admin lists the hosted domains whose mail is
    delivered here (docs/exim-integration.md).
    """

    DEFAULT_USER = "server-user"
    DEFAULT_PASSWORD = "Server-Wide-Secret-4Lm%"
    # A mailbox login, as a hosting server's Dovecot or SASL setup has it.
    SUBMITTER = ("u@own.example", "Submit-Pass-2Wd")
    # Debian's web server user: any unprivileged user is untrusted alike.
    WEB_USER = "www-data"
    exim_options = {"submission_account": SUBMITTER,
                    "hosted_domains": ["own.example"]}

    @classmethod
    def setUpClass(cls):
        # A missing web user is a broken test machine, not a skip.
        pwd.getpwnam(cls.WEB_USER)
        cls.start_parts()
        cls.own = cls.start_relay("relay-own")
        cls.default = cls.start_relay("relay-default")
        p = cls.panel
        p.write_user("alice")
        p.write_user("bob")
        p.write_user("carol", suspended=True)
        p.write_server_relay(cls.settings(
            cls.default, cls.DEFAULT_USER, cls.DEFAULT_PASSWORD))
        own = cls.settings(cls.own, "own-user", "Own-Secret-8Hj")
        p.write_domain("alice", "own.example", {"smtp_relay": own})
        p.write_domain("alice", "norelay.example", {})
        p.write_domain("alice", "relayoff.example", {"smtp_relay": dict(
            own, enabled=False)})
        p.write_domain("bob", "dsusp.example",
                       {"suspended": True, "smtp_relay": own})
        p.write_domain("carol", "carol.example", {"smtp_relay": own})
        cls.starts_before = cls.exim.daemon_starts()
        cls.pid_before = cls.exim.daemon_pid()
        cls.first_run = cls.apply()
        for domain in ("own.example", "norelay.example", "relayoff.example",
                       "dsusp.example", "carol.example"):
            cls.send(f"sender@{domain}", key=domain)
        cls.send("bob@OWN.EXAMPLE", key="upper")
        cls.send("news@news.example.com", key="not-hosted")
        cls.send("", key="empty")
        cls.wait_all()

    def assertDefaultRelay(self, sent):
        self.assertRelayedAs(sent, self.default, self.DEFAULT_USER,
                             self.DEFAULT_PASSWORD)
        self.assertDeliveredBy(sent, "havenoro_default",
                               "havenoro_relay_smtp")

    def test_exit_status_is_0_with_an_all_good_tree(self):
        """verifies --once exits 0 when every domain applied."""
        self.assertEqual(self.first_run.returncode, 0,
                         self.first_run.stdout + self.first_run.stderr)
        fields = self.summary(self.first_run)
        self.assertEqual(fields.get("relayed"), "1", self.first_run.stdout)

    def test_first_apply_reloads_exim_which_comes_back(self):
        """verifies the HUP: same pid, a new "daemon started", a banner."""
        self.assertEqual(self.exim.daemon_pid(), self.pid_before)
        self.assertGreater(self.exim.daemon_starts(), self.starts_before)
        self.assertIsNotNone(self.exim.banner())

    def test_domain_relay_wins_over_the_server_wide_relay(self):
        """verifies a domain's own relay, in any case, beats the default."""
        for key in ("own.example", "upper"):
            with self.subTest(sender=self.sent[key].sender):
                self.assertRelayedAs(self.sent[key], self.own, "own-user",
                                     "Own-Secret-8Hj")

    def test_F02_hosted_domain_without_relay_takes_server_wide_relay(self):
        """verifies no relay or relay off use the server-wide relay."""
        for key in ("norelay.example", "relayoff.example"):
            with self.subTest(domain=key):
                self.assertDefaultRelay(self.sent[key])

    def test_F02_sender_not_hosted_takes_server_wide_relay(self):
        """verifies news.example.com (not hosted) uses the default."""
        self.assertDefaultRelay(self.sent["not-hosted"])

    def test_F03_empty_sender_takes_server_wide_relay(self):
        """verifies bounces and autoreplies (MAIL FROM:<>) use the default.
        """
        self.assertDefaultRelay(self.sent["empty"])

    def test_suspended_domains_use_no_relay_at_all(self):
        """verifies suspended mail is left to direct delivery, as the
        routers document, and never uses a relay's credentials."""
        for key in ("carol.example", "dsusp.example"):
            with self.subTest(domain=key):
                self.assertWentDirect(self.sent[key])

    def test_F04_sendmail_f_takes_the_domain_relay(self):
        """verifies `sendmail -f u@own.example` ends at own.example's relay.
        """
        token = "havenoro-e2e-F04-sendmail-f"
        cp = self.exim.submit_local(RCPT, token, sender="u@own.example")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        got = h.wait_until(lambda: self.own.messages_with(token), 20,
                           "sendmail -f message at the relay")
        self.assertEqual(got[0]["username"], b"own-user")

    def test_F04_root_cron_mail_takes_the_server_wide_relay(self):
        """verifies root's mail (sender root@<primary host>) uses the
        server-wide relay."""
        token = "havenoro-e2e-F04-cron"
        cp = self.exim.submit_local(RCPT, token)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        got = h.wait_until(lambda: self.default.messages_with(token), 20,
                           "root's message at the server-wide relay")
        self.assertEqual(got[0]["password"],
                         self.DEFAULT_PASSWORD.encode())

    def test_F04_smtp_submission_with_auth_takes_the_domain_relay(self):
        """verifies a mail client that authenticates with its mailbox login
        and sends MAIL FROM:<u@own.example> ends at own.example's relay
        with own.example's credentials: webmail on this host (127.0.0.1)
        and a remote client (127.0.0.2, outside relay_from_hosts, so the
        AUTH is what lets it relay)."""
        with self.assertRaisesRegex(h.HarnessError,
                                    "RCPT TO.*relay not permitted"):
            self.exim.send("u@own.example", RCPT, "havenoro-e2e-F04-noauth",
                           source_address="127.0.0.2")
        for client in ("127.0.0.1", "127.0.0.2"):
            with self.subTest(client=client):
                token = f"havenoro-e2e-F04-submission-{client}"
                msgid = self.exim.send("u@own.example", RCPT, token,
                                       login=self.SUBMITTER,
                                       source_address=client)
                sent = Sent("u@own.example", token, msgid)
                self.exim.wait_delivery(msgid)
                arrival = next(line for line in self.exim.message_log(msgid)
                               if " <= " in line)
                self.assertEqual(h.log_field(arrival, "A"),
                                 f"test_submission:{self.SUBMITTER[0]}",
                                 arrival)
                record = self.assertRelayedAs(sent, self.own, "own-user",
                                              "Own-Secret-8Hj")
                self.assertNotIn("Sender:", record["data"])
                self.assertDeliveredBy(sent, "havenoro_relay",
                                       "havenoro_relay_smtp")

    def assertFromWebUser(self, token):
        """The message with token reached the server-wide relay only, with
        the sender Exim gives an untrusted local user."""
        got = h.wait_until(lambda: self.default.messages_with(token), 20,
                           "the web user's message at the server-wide "
                           "relay")
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["mail_from"],
                         f"{self.WEB_USER}@mail.havenoro.test")
        self.assertEqual(got[0]["password"], self.DEFAULT_PASSWORD.encode())
        # Exim names the calling user; root's mail would say "from root".
        self.assertIn(f"from {self.WEB_USER} by mail.havenoro.test with "
                      "local", got[0]["data"])
        for relay in (self.own, self.sink):
            self.assertEqual(relay.messages_with(token), [], relay.name)

    def test_F04_web_user_sendmail_takes_the_server_wide_relay(self):
        """verifies `sendmail` without -f run by a web user (www-data):
        the sender is www-data@<primary host name>, not a hosted domain,
        so the mail takes the server-wide relay."""
        token = "havenoro-e2e-F04-webuser-nof"
        cp = self.exim.submit_as(self.WEB_USER, RCPT, token)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertFromWebUser(token)

    def test_F04_web_user_sendmail_f_is_ignored_by_exim(self):
        """verifies `sendmail -f u@own.example` run by a web user: Exim
        ignores -f from an untrusted caller (the example sets no
        untrusted_set_sender), so the mail takes the server-wide relay and
        never own.example's relay with own.example's credentials."""
        token = "havenoro-e2e-F04-webuser-dashf"
        cp = self.exim.submit_as(self.WEB_USER, RCPT, token,
                                 sender="u@own.example")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertFromWebUser(token)

    def send_to(self, sender, rcpt, token):
        msgid = self.exim.send(sender, rcpt, token)
        sent = Sent(sender, token, msgid)
        self.exim.wait_delivery(msgid)
        return sent

    def test_F04_mail_to_a_hosted_domain_is_delivered_locally(self):
        """verifies mail to a relay domain whose mailboxes are on this
        server (own.example, in local_domains) is delivered here and never
        relayed, whoever sends it: own.example itself, a hosted domain
        without a relay, a sender that is not hosted, an empty sender."""
        senders = ["u@own.example", "u@norelay.example",
                   "news@news.example.com", ""]
        for i, sender in enumerate(senders):
            with self.subTest(sender=sender):
                token = f"havenoro-e2e-F04-local-{i}"
                sent = self.send_to(sender, "box@own.example", token)
                kind, line = self.exim.delivery(sent.msgid)
                self.assertEqual(kind, "=>", self.story(sent))
                self.assertEqual(h.log_field(line, "R"), "hosted_mailbox",
                                 line)
                self.assertIn(token, self.exim.mailbox("own.example"))
                self.assertEqual(self.arrivals(sent), [], self.story(sent))

    def test_F04_hosted_domain_outside_local_domains_is_relayed(self):
        """verifies mail to a hosted domain that is not in local_domains
        (norelay.example: its mailboxes are elsewhere) is remote mail to
        Exim: from u@own.example it goes through own.example's relay."""
        token = "havenoro-e2e-F04-not-local"
        sent = self.send_to("u@own.example", "box@norelay.example", token)
        self.assertRelayedAs(sent, self.own, "own-user", "Own-Secret-8Hj")
        self.assertNotIn(token, self.exim.mailbox("own.example"))

    def test_default_credential_file(self):
        """verifies default/smtp_relay.conf: 0640, root, exim group."""
        path = self.credential_file()
        st = path.stat()
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual((st.st_uid, st.st_gid),
                         (0, grp.getgrnam(h.EXIM_USER).gr_gid))
        fields = self.credential_fields()
        self.assertEqual(fields.get("password"), h.b64(self.DEFAULT_PASSWORD))

    def test_second_run_with_nothing_changed_writes_nothing(self):
        """verifies an idle --once: exit 0, every file, link and directory
        as it was (inode, mtime, bytes), Exim not reloaded."""
        before = h.snapshot(self.output_dir)
        starts, pid = self.exim.daemon_starts(), self.exim.daemon_pid()
        cp = self.apply()
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        after = h.snapshot(self.output_dir)
        changed = sorted(k for k in set(before) | set(after)
                         if before.get(k) != after.get(k))
        self.assertEqual(changed, [], cp.stdout)
        self.assertEqual(self.exim.daemon_pid(), pid)
        self.assertEqual(self.exim.daemon_starts(), starts, cp.stdout)


def copy_templates(work, name):
    """A private copy of exim-templates/ for a test to break."""
    target = Path(work) / f"templates-{name}"
    shutil.copytree(h.TEMPLATES_DIR, target)
    target.chmod(0o755)
    return target


def edit_file(path, pattern, replacement, flags=0):
    """Replaces one regex match in a template copy, or fails loudly.

    replacement is literal text, or a function of the match.
    """
    text = path.read_text()
    func = replacement if callable(replacement) else lambda m: replacement
    new, n = re.subn(pattern, func, text, count=1, flags=flags)
    if n != 1:
        raise AssertionError(f"{path.name}: {pattern!r} not found; "
                             "the template changed, update the test")
    path.write_text(new)


def live_view(tree, current):
    """What Exim reads: bytes and link targets outside generations/ and in
    the generation named current; older or newer generations may come and
    go (pruning, a refused candidate's leftovers). The appliers' lock file,
    which counts the applies that changed something, is not read by Exim."""
    return {path: (kind, content)
            for path, (kind, _, _, content) in h.snapshot(tree).items()
            if kind != "dir" and path != ".lock"
            and (not path.startswith("generations/")
                 or path.startswith(current + "/"))}


class CandidateChecksTest(EndToEnd):
    """A candidate that Exim or the probes reject never goes live.

    One good apply first; each test then breaks a copy of the templates,
    changes a password, and proves that the run failed, printed why, and
    left every live file, the old password and the Exim daemon alone.
    """

    OLD_PASSWORD = "Candidate-Old-Secret-2Wx"

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.relay = cls.start_relay("relay-a")
        cls.panel.write_user("alice")
        cls.panel.write_server_relay(None)
        cls.write_password(cls.OLD_PASSWORD)
        cls.apply_ok()

    @classmethod
    def write_password(cls, password):
        cls.panel.write_domain("alice", "a.example", {
            "smtp_relay": cls.settings(cls.relay, "a-user", password)})

    def restore_good_state(self):
        """Puts the good templates and password back live, so that one
        wrongly accepted candidate does not break the other tests."""
        self.write_password(self.OLD_PASSWORD)
        self.apply_ok()

    def assertRejectedAndNothingChanged(self, templates, **overrides):
        self.addCleanup(self.restore_good_state)
        self.write_password(f"Candidate-New-Secret-{self.id()[-12:]}")
        current = os.readlink(self.output_dir / "current")
        before = live_view(self.output_dir, current)
        pid, starts = self.exim.daemon_pid(), self.exim.daemon_starts()
        cp = self.apply(templates_dir=str(templates), **overrides)
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertEqual(os.readlink(self.output_dir / "current"), current)
        after = live_view(self.output_dir, current)
        self.assertEqual(
            sorted(k for k in set(before) | set(after)
                   if before.get(k) != after.get(k)), [],
            "live files changed")
        self.assertEqual(self.exim.daemon_pid(), pid)
        self.assertEqual(self.exim.daemon_starts(), starts,
                         "Exim was reloaded")
        sent = self.send("x@a.example")
        self.exim.wait_delivery(sent.msgid)
        self.assertRelayedAs(sent, self.relay, "a-user", self.OLD_PASSWORD)
        return cp

    def test_F06_server_only_option_in_a_transport_is_rejected(self):
        """verifies `tls_on_connect` in a transport: Exim's error and its
        line number are shown, the previous configuration stays live."""
        templates = copy_templates(self.work, "F06")
        edit_file(templates / "transports.conf.mustache",
                  r"(?<=havenoro_relay_smtp:\n  driver = smtp\n)",
                  "  tls_on_connect = true\n")
        cp = self.assertRejectedAndNothingChanged(templates)
        self.assertIn('option "tls_on_connect" unknown', cp.stderr)
        self.assertRegex(cp.stderr, r"line \d+")

    def test_unknown_option_in_a_transport_is_rejected(self):
        """verifies a misspelt option never goes live."""
        templates = copy_templates(self.work, "unknown")
        edit_file(templates / "transports.conf.mustache",
                  r"(?<=havenoro_relay_smtps:\n  driver = smtp\n)",
                  "  no_such_option = 1\n")
        cp = self.assertRejectedAndNothingChanged(templates)
        self.assertIn("no_such_option", cp.stderr)

    def test_F15_expansion_error_that_passes_bV_is_rejected(self):
        """verifies an unbalanced brace in a router condition (which -bV
        accepts) is caught by the expansion or routing checks."""
        templates = copy_templates(self.work, "F15")
        edit_file(templates / "routers.conf.mustache",
                  r"condition = \$\{if def:sender_address_domain\}",
                  "condition = ${if def:sender_address_domain")
        self.assertRejectedAndNothingChanged(templates)

    def test_F01_tainted_lookup_path_is_rejected(self):
        """verifies a relay file path built straight from the sender's
        domain (passes -bV, fails at delivery) is caught by the probe."""
        templates = copy_templates(self.work, "F01")
        edit_file(templates / "routers.conf.mustache",
                  r"address_data = \$\{lookup\{\$\{lc:\$sender_address_"
                  r"domain\}\}.*?filter=subdir\{([^}]*)\}.*?fail\}",
                  lambda m: f"address_data = {m.group(1)}/"
                  "${lc:$sender_address_domain}/smtp_relay.conf",
                  flags=re.S)
        self.assertRejectedAndNothingChanged(templates)


    def test_F16_exim_not_back_after_reload_restores_previous_config(self):
        """verifies that when the reloaded daemon does not come back, the
        failure is reported and the previous generation and credential
        files are live again.

        A real Exim cannot be made to die on one reload only, so this one
        case uses a stand-in: a process that exits on SIGHUP, as Exim does
        when its new configuration is bad, and a port that never answers.
        """
        templates = copy_templates(self.work, "F16")
        with open(templates / "transports.conf.mustache", "a") as f:
            f.write("# A harmless change, so that a reload is needed.\n")
        stand_in_pid = self.work / "stand-in-exim.pid"
        stand_in = h.ProcessGroup(
            [h.PYTHON, "-c", "import signal, sys, time; "
             "signal.signal(signal.SIGHUP, lambda *a: sys.exit(1)); "
             "time.sleep(120)"],
            self.work / "stand-in.out", self.work / "stand-in.err")
        self.addCleanup(stand_in.stop)
        stand_in_pid.write_text(f"{stand_in.pid}\n")
        cp = self.assertRejectedAndNothingChanged(
            templates, exim_pid_file=str(stand_in_pid),
            exim_probe_address=f"127.0.0.1:{h.free_port()}",
            reload_timeout_s=3)
        self.assertFalse(stand_in.running(), "no SIGHUP was sent")
        self.assertTrue(self.stderr_lines(cp, "exim"), cp.stderr)


class RelayDownTest(EndToEnd):
    """F11: a relay that cannot be reached defers; it never goes direct.

    Exim's own queue runner waits an hour here, so anything that moves
    meanwhile was moved by a delivery attempt the test can see.
    """

    queue_interval = "1h"

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.up = cls.start_relay("relay-up")
        gone = cls.start_relay("relay-gone")
        cls.panel.write_user("alice")
        cls.panel.write_server_relay(None)
        cls.panel.write_domain("alice", "down.example", {
            "smtp_relay": h.relay_settings(gone, username="down-user",
                                           password="Down-Secret-6Ty")})
        cls.panel.write_domain("alice", "nxhost.example", {
            "smtp_relay": h.relay_settings(
                host="relay.does-not-exist.invalid", port=587,
                username="nx-user", password="Nx-Secret-0Pl")})
        cls.panel.write_domain("alice", "up.example", {
            "smtp_relay": cls.settings(cls.up, "up-user", "Up-Secret-3Er")})
        cls.first_run = cls.apply()
        gone.stop()
        cls.send("a@down.example", key="down")
        cls.send("a@nxhost.example", key="nxhost")
        cls.wait_all()
        cls.outcomes = {k: cls.exim.delivery(s.msgid)
                        for k, s in cls.sent.items()}
        # A message to a working relay afterwards: its connection must not
        # carry the held messages (they belong to other relays).
        cls.send("a@up.example", key="up")
        cls.wait_all()
        time.sleep(2)
        cls.flush = cls.exim.flush()
        cls.queue = cls.exim.exim("-bp").stdout

    def assertHeld(self, key):
        sent = self.sent[key]
        kind, line = self.outcomes[key]
        self.assertEqual(kind, "==", line)
        self.assertEqual(self.arrivals(sent), [], self.story(sent))
        self.assertIn(sent.msgid, self.queue, "no longer queued")
        later = [line for line in self.exim.message_log(sent.msgid)
                 if re.search(r" (=>|\*\*) |Frozen", line)]
        self.assertEqual(later, [], "delivered, bounced or frozen")

    def test_F11_port_where_nothing_listens_defers(self):
        """verifies the message is deferred and stays queued."""
        self.assertHeld("down")

    def test_F11_relay_host_that_does_not_resolve_defers(self):
        """verifies an unresolvable relay name defers, not freezes."""
        self.assertHeld("nxhost")

    def test_relay_down_does_not_fail_the_apply(self):
        """verifies an unreachable relay is not a settings error."""
        self.assertEqual(self.first_run.returncode, 0,
                         self.first_run.stdout + self.first_run.stderr)

    def test_held_mail_never_rides_another_domains_relay_connection(self):
        """verifies Exim does not pass its open, authenticated connection
        to up.example's relay on to messages held for other relays: that
        would send down.example's mail with up.example's credentials."""
        self.assertRelayedAs(self.sent["up"], self.up, "up-user",
                             "Up-Secret-3Er")
        self.assertEqual(len(self.up.received()), 1,
                         [m["mail_from"] for m in self.up.received()])


class RelayFixedTest(EndToEnd):
    """F11: once the settings are fixed, held mail leaves without waiting.

    The retry rules would hold a deferred message for 15 minutes and more;
    the fixed relay is a new host, so the next ordinary queue run (not a
    forced one) must already send it there. The daemon's own queue runner
    is an hour away, so that run is the one the test starts.
    """

    queue_interval = "1h"

    @classmethod
    def setUpClass(cls):
        cls.start_parts()

    def hold_mail(self, user, domain):
        """A message from `domain` deferred at its relay, now gone."""
        gone = self.start_relay(f"relay-gone-{domain.split('.')[0]}")
        self.panel.write_user(user)
        self.panel.write_domain(user, domain, {
            "smtp_relay": self.settings(gone, "u", "Gone-Secret-8Pw")})
        self.apply_ok()
        gone.stop()
        sent = self.send(f"a@{domain}")
        kind, line = self.exim.wait_delivery(sent.msgid)
        self.assertEqual(kind, "==", line)
        return sent

    def test_F11_held_mail_goes_to_the_fixed_relay_without_a_queue_run(self):
        """verifies that fixing a domain's relay sends its held mail to the
        new relay at once: the apply starts a forced run for that sender,
        nobody has to run the queue by hand."""
        self.panel.write_server_relay(None)
        sent = self.hold_mail("alice", "held.example")
        fixed = self.start_relay("relay-fixed2")
        self.panel.write_domain("alice", "held.example", {
            "smtp_relay": self.settings(fixed, "u", "Held-Secret-3Qa")})
        self.apply_ok()
        h.wait_until(lambda: self.arrivals(sent), 20,
                     f"held mail at the fixed relay{self.story(sent)}")
        self.assertRelayedAs(sent, fixed, "u", "Held-Secret-3Qa")

    def test_a_fix_runs_the_queue_only_when_mail_waits(self):
        """verifies that a relay change starts no queue run while Exim's
        queue is empty (each would be an Exim process per save, reading
        the whole configuration), and one for the sender once mail from
        that domain waits in the queue."""
        def sender_runs():
            return [line for line in self.exim.log_lines()
                    if "Start queue run" in line and "@idle.example" in line]
        one = self.start_relay("relay-one3")
        two = self.start_relay("relay-two3")
        self.panel.write_user("alice")
        self.panel.write_server_relay(None)
        h.wait_until(lambda: self.exim.exim("-bpc").stdout.strip() == "0",
                     30, "Exim's queue empty before the test")
        for relay in (one, two, one):
            self.panel.write_domain("alice", "idle.example", {
                "smtp_relay": self.settings(relay, "u", "Idle-Secret-5Re")})
            self.apply_ok()
        time.sleep(1)
        self.assertEqual(sender_runs(), [])

        sent = self.hold_mail("alice", "idle.example")
        self.panel.write_domain("alice", "idle.example", {
            "smtp_relay": self.settings(two, "u", "Idle-Secret-5Re")})
        self.apply_ok()
        h.wait_until(sender_runs, 20, "a queue run for idle.example's mail")
        h.wait_until(lambda: self.arrivals(sent), 20,
                     f"held mail at the fixed relay{self.story(sent)}")
        self.assertRelayedAs(sent, two, "u", "Idle-Secret-5Re")

    def test_b_held_mail_leaves_when_its_relay_is_removed(self):
        """verifies that removing a domain's broken relay sends its held
        mail at once by the server-wide relay it now takes, not at the next
        queue run an hour away."""
        server = self.start_relay("relay-server-b")
        self.panel.write_server_relay(
            self.settings(server, "srv", "Srv-Secret-8Qx"))
        self.addCleanup(self.panel.write_server_relay, None)
        sent = self.hold_mail("alice", "dropped.example")
        self.panel.write_domain("alice", "dropped.example", {})
        self.apply_ok()
        h.wait_until(lambda: self.arrivals(sent), 20,
                     f"held mail at the server-wide relay{self.story(sent)}")
        self.assertRelayedAs(sent, server, "srv", "Srv-Secret-8Qx")

    def test_c_held_mail_leaves_when_its_user_is_suspended(self):
        """verifies that suspending the user of a domain whose relay is down
        sends its held mail at once the way a suspended domain's mail goes
        (directly, here to the MX sink), not at the next queue run."""
        sent = self.hold_mail("carol", "paused.example")
        self.panel.write_user("carol", suspended=True)
        self.apply_ok()
        h.wait_until(lambda: self.arrivals(sent), 20,
                     f"held mail at the MX sink{self.story(sent)}")
        self.assertArrivedOnlyAt(sent, self.sink)

    def test_F11_held_mail_goes_to_the_fixed_relay_at_next_queue_run(self):
        """verifies `exim -q` after the fix delivers to the new relay."""
        gone = self.start_relay("relay-gone")
        fixed = self.start_relay("relay-fixed")
        self.panel.write_user("alice")
        self.panel.write_server_relay(None)
        self.panel.write_domain("alice", "down.example", {
            "smtp_relay": self.settings(gone, "u", "Fix-Secret-7Ui")})
        self.apply_ok()
        gone.stop()
        sent = self.send("a@down.example")
        kind, line = self.exim.wait_delivery(sent.msgid)
        self.assertEqual(kind, "==", line)
        self.panel.write_domain("alice", "down.example", {
            "smtp_relay": self.settings(fixed, "u", "Fix-Secret-7Ui")})
        self.apply_ok()
        run = self.exim.exim("-q", timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        h.wait_until(lambda: self.arrivals(sent), 20,
                     f"held mail at the fixed relay{self.story(sent)}")
        self.assertRelayedAs(sent, fixed, "u", "Fix-Secret-7Ui")


class TimeoutsAndRefusalsTest(EndToEnd):
    """F05, F13, F14: mismatches, silence and refusals end in bounded time.

    Timeouts are set to 3 s so a hang shows as a failure, not a stall.
    """

    relayd_overrides = {"connect_timeout_s": 3, "command_timeout_s": 3}
    BOUND_S = 15
    # Held mail moves only when a test moves it: a queue run of Exim's own
    # could retry the refused login just before another domain's message
    # is sent, and hold it for that second (see the F14 tests).
    queue_interval = "1h"

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.starttls = cls.start_relay("relay-starttls")
        cls.tls = cls.start_relay("relay-tls", mode="tls")
        cls.refuse_auth = cls.start_relay(
            "relay-535", auth_reply="535 5.7.8 Authentication credentials "
            "invalid")
        cls.refuse_mail = cls.start_relay(
            "relay-550", mail_reply="550 5.7.1 Sender rejected by the "
            "provider's policy")
        cls.shared = cls.start_relay("relay-shared")
        cls.silent = h.SilentListener()
        cls.addClassCleanup(cls.silent.stop)
        cls.relay_465 = None
        if h.port_is_free(465):
            cls.relay_465 = cls.start_relay("relay-465", mode="tls",
                                            port=465)
        p = cls.panel
        p.write_user("alice")
        p.write_server_relay(None)

        def domain(name, relay=None, **kw):
            p.write_domain("alice", f"{name}.example", {
                "smtp_relay": cls.settings(relay, f"{name}-user",
                                           f"Secret-{name}-9Ok", **kw)})
        domain("silent", port=cls.silent.port, security="starttls")
        domain("tls-on-starttls", cls.starttls, security="tls")
        domain("starttls-on-tls", cls.tls, security="starttls")
        domain("auth535", cls.refuse_auth)
        domain("mail550", cls.refuse_mail)
        domain("noport")
        domain("port25", port=25)
        domain("port465", cls.relay_465, port=465)
        # Two customers of one provider; one has a wrong password.
        domain("rightpass", cls.shared)
        p.write_domain("alice", "wrongpass.example", {
            "smtp_relay": h.relay_settings(cls.shared, username="wrong",
                                           password="Wrong-Secret-5Gb")})
        cls.first_run = cls.apply()
        cls.started = time.monotonic()
        for name in ("silent", "tls-on-starttls", "starttls-on-tls",
                     "auth535", "mail550"):
            cls.send(f"a@{name}.example", key=name)
        if cls.relay_465:
            cls.send("a@port465.example", key="port465")
        cls.took = {}
        for key, sent in cls.sent.items():
            cls.exim.wait_delivery(sent.msgid, timeout=40)
            cls.took[key] = time.monotonic() - cls.started
        # F14: the refused login leaves a retry record for the relay's
        # host; the other domain's message is sent once its next try time
        # has come (one second, the auth_failed rule), waiting five
        # seconds at most, so that a longer hold shows as a failure.
        wrong = cls.send("a@wrongpass.example", key="wrongpass")
        cls.exim.wait_delivery(wrong.msgid, timeout=40)
        cls.retry = cls.exim.retry_records()
        shared = cls.retry.get(cls.host_key(cls.shared))
        if shared:
            time.sleep(max(0, min(shared["next_try"] - time.time(), 5)))
        right = cls.send("a@rightpass.example", key="rightpass")
        cls.exim.wait_delivery(right.msgid, timeout=40)

    @staticmethod
    def host_key(relay):
        """Exim's retry key for a relay routed as localhost:PORT."""
        return f"T:localhost:127.0.0.1:{relay.port}"

    def assertDeferredInTime(self, key):
        sent = self.sent[key]
        kind, line = self.exim.delivery(sent.msgid)
        self.assertEqual(kind, "==", line)
        self.assertLess(self.took[key], self.BOUND_S, line)
        self.assertEqual(self.arrivals(sent), [], self.story(sent))
        return line

    def test_exit_status_is_0_and_port_25_warns(self):
        """verifies F13: port 25 is accepted, with a warning naming it."""
        self.assertEqual(self.first_run.returncode, 0,
                         self.first_run.stdout + self.first_run.stderr)
        self.assertTrue(self.stderr_lines(self.first_run,
                                          "port25.example", "25"),
                        self.first_run.stderr)
        self.assertTrue(self.credential_fields("port25.example")["route"]
                        .endswith(":25"))

    def test_F13_missing_port_means_587(self):
        """verifies a relay without a port is routed to 587, never 25."""
        route = self.credential_fields("noport.example")["route"]
        self.assertTrue(route.endswith(":587"), route)
        self.assertRoute("a@noport.example", "havenoro_relay_smtp", 587)

    def test_F13_relay_that_never_answers_defers_in_bounded_time(self):
        """verifies a silent port defers after command_timeout."""
        self.assertDeferredInTime("silent")

    def test_F05_tls_against_a_starttls_port_defers_in_bounded_time(self):
        """verifies a TLS-mode mismatch fails and is never sent."""
        self.assertDeferredInTime("tls-on-starttls")

    def test_F05_starttls_against_a_tls_port_defers_in_bounded_time(self):
        """verifies the other mismatch (waits for a banner) is bounded."""
        self.assertDeferredInTime("starttls-on-tls")

    def test_F05_port_465_auto_means_tls_from_the_first_byte(self):
        """verifies "auto" on 465 selects the smtps transport."""
        fields = self.credential_fields("port465.example")
        self.assertEqual(fields.get("transport"), "havenoro_relay_smtps")
        self.assertTrue(fields.get("route", "").endswith(":465"), fields)
        self.assertRoute("a@port465.example", "havenoro_relay_smtps", 465)

    def test_F05_port_465_delivers_over_implicit_tls(self):
        """verifies real delivery to a relay listening on 465."""
        if self.relay_465 is None:
            self.skipTest("port 465 on 127.0.0.1 is taken; the route is "
                          "still checked by the test above")
        record = self.assertRelayedAs(self.sent["port465"], self.relay_465,
                                      "port465-user", "Secret-port465-9Ok")
        self.assertEqual(record["tls_mode"], "implicit")

    def test_F14_auth_refused_with_535_defers(self):
        """verifies a 535 on AUTH defers the message (not a bounce)."""
        line = self.assertDeferredInTime("auth535")
        self.assertTrue(self.refuse_auth.auth_attempts(),
                        "the relay was never asked to authenticate")
        self.assertIn("535", " ".join(
            self.exim.message_log(self.sent["auth535"].msgid)), line)

    def test_F14_refused_login_holds_the_relay_host_for_one_second(self):
        """verifies the retry record a 535 leaves for the relay's host
        (Exim's key is host, address and port: every domain on that relay
        shares it) sets the next try one second later, the auth_failed
        rule of exim4.conf.example, while a relay that does not answer
        keeps the general rule's 15 minutes."""
        record = self.retry.get(self.host_key(self.shared))
        self.assertIsNotNone(record, self.retry)
        self.assertEqual(record["errno"], -42, record)  # ERRNO_AUTHFAIL
        self.assertEqual(record["next_try"] - record["last_try"], 1, record)
        silent = self.retry.get(f"T:localhost:127.0.0.1:{self.silent.port}")
        self.assertIsNotNone(silent, self.retry)
        self.assertEqual(silent["next_try"] - silent["last_try"], 15 * 60,
                         silent)

    # TODO(#5): Exim cannot key a host's retry record by domain or
    # credentials, so this is a partial fix. Mail of another domain that
    # reaches the relay host within the second after a refused login
    # (immediate delivery or a queue run) is deferred "retry time not
    # reached" and waits for the next queue run (Debian: 30 minutes); a
    # domain that keeps being refused at a busy relay can so hold others
    # again and again. And the refused domain's held messages are each
    # retried at every queue run instead of backing off.
    def test_F14_one_domains_refused_login_does_not_hold_up_another(self):
        """verifies that after a 535 for one domain at a shared relay, the
        next domain's mail to the same relay host, sent once that second
        has passed, goes at once with its own credentials, and the refused
        domain's message stays deferred."""
        kind, line = self.exim.delivery(self.sent["wrongpass"].msgid)
        self.assertEqual(kind, "==", line)
        self.assertIn("(-42)", line)
        self.assertEqual(self.arrivals(self.sent["wrongpass"]), [])
        kind, line = self.exim.delivery(self.sent["rightpass"].msgid)
        self.assertEqual(kind, "=>", self.story(self.sent["rightpass"]))
        self.assertRelayedAs(self.sent["rightpass"], self.shared,
                             "rightpass-user", "Secret-rightpass-9Ok")

    def test_F14_mail_from_refused_with_550_bounces_with_its_text(self):
        """verifies a 5xx on MAIL FROM bounces with the provider's text."""
        sent = self.sent["mail550"]
        kind, line = self.exim.delivery(sent.msgid)
        self.assertEqual(kind, "**", line)
        self.assertIn("Sender rejected by the provider's policy", line)


class DkimTest(EndToEnd):
    """DKIM: relayed mail of a domain with DKIM on carries a signature that
    verifies with the domain's public key; the key reaches Exim only
    through the daemon's own copy (0640 root:Debian-exim)."""

    SELECTOR = "mail"

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.relay = cls.start_relay("relay-dkim")
        cls.default = cls.start_relay("relay-default-dkim")
        key = cls.work / "dkim-key.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"],
                       check=True, capture_output=True)
        pub = subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-outform",
             "DER"], check=True, capture_output=True).stdout
        cls.public_key = base64.b64encode(pub)
        cls.panel.write_user("alice")
        cls.panel.write_server_relay(
            cls.settings(cls.default, "srv", "Srv-Dkim-1"))
        for domain, own in (("signed.example", True),
                            ("signed-default.example", False)):
            settings = {"dkim": {"enabled": True,
                                 "selector": cls.SELECTOR}}
            if own:
                settings["smtp_relay"] = cls.settings(cls.relay, "d",
                                                      "Dkim-Secret-1")
            cls.panel.write_domain("alice", domain, settings)
            pem = cls.panel.domain_file("alice", domain).with_name(
                f"{domain}.dkim.pem")
            shutil.copy(key, pem)
            os.chmod(pem, 0o600)
        cls.panel.write_domain("alice", "unsigned.example", {
            "smtp_relay": cls.settings(cls.relay, "d", "Dkim-Secret-1")})
        cls.apply_ok()
        for sender in ("a@signed.example", "a@signed-default.example",
                       "a@unsigned.example"):
            cls.send(sender)
        cls.wait_all()

    def dns(self, name, timeout=5):
        if name == f"{self.SELECTOR}._domainkey.signed.example.".encode() or \
                name == (f"{self.SELECTOR}._domainkey."
                         f"signed-default.example.").encode():
            return b"v=DKIM1; k=rsa; p=" + self.public_key
        return None

    def message_at(self, sender, relay):
        record = self.assertArrivedOnlyAt(self.sent[sender], relay)
        return record["data"].encode("utf-8")

    def test_relayed_mail_is_signed_with_the_domains_key(self):
        """verifies the DKIM signature of a relayed message."""
        data = self.message_at("a@signed.example", self.relay)
        self.assertIn(b"DKIM-Signature:", data)
        self.assertIn(b"d=signed.example", data)
        self.assertIn(b"s=mail", data)
        self.assertTrue(dkim.verify(data, dnsfunc=self.dns),
                        "signature does not verify")

    def test_mail_through_the_server_wide_relay_is_signed_too(self):
        """verifies that a domain without a relay of its own is signed with
        its key when it goes through the server-wide relay."""
        data = self.message_at("a@signed-default.example", self.default)
        self.assertIn(b"d=signed-default.example", data)
        self.assertTrue(dkim.verify(data, dnsfunc=self.dns))

    def test_domain_without_dkim_is_not_signed(self):
        data = self.message_at("a@unsigned.example", self.relay)
        self.assertNotIn(b"DKIM-Signature:", data)

    def test_key_copy_is_0640_root_and_exim_group(self):
        key = self.output_dir / "dkim" / "signed.example" / "private.pem"
        st = key.stat()
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual(st.st_uid, 0)
        self.assertEqual(st.st_gid, grp.getgrnam("Debian-exim").gr_gid)
        self.assertFalse((self.output_dir / "dkim" /
                          "unsigned.example").exists())


class PrivateRelaysTest(EndToEnd):
    """F12: loopback and private relays only when the admin allows them."""

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        p = cls.panel
        p.write_user("alice")
        p.write_server_relay(None)
        cls.private = {"loop.example": "127.0.0.1",
                       "ten.example": "10.0.0.5",
                       "v6loop.example": "::1"}
        # Never contacted: only rendered and routed with -bt.
        cls.public = {"public.example": "8.8.8.8"}
        for domain, host in {**cls.private, **cls.public}.items():
            p.write_domain("alice", domain, {"smtp_relay": h.relay_settings(
                host=host, port=2587, username="u",
                password="Private-Secret-1Zx")})
        cls.refused = cls.apply(allow_private_relays=False)
        cls.allowed = cls.apply(allow_private_relays=True)

    def test_F12_private_and_loopback_relays_refused_by_default(self):
        """verifies each private relay is rejected, naming the host."""
        self.assertEqual(self.refused.returncode, 1, self.refused.stderr)
        for domain in self.private:
            with self.subTest(domain=domain):
                self.assertTrue(self.stderr_lines(
                    self.refused, f"'{domain}'", "smtp_relay.host"),
                    self.refused.stderr)
        self.assertFalse(self.stderr_lines(self.refused, "public.example"))

    def test_F12_private_and_loopback_relays_allowed_when_asked(self):
        """verifies allow_private_relays routes them, IPv6 included."""
        self.assertEqual(self.allowed.returncode, 0,
                         self.allowed.stdout + self.allowed.stderr)
        for domain, host in {**self.private, **self.public}.items():
            with self.subTest(domain=domain):
                self.assertRoute(f"a@{domain}", "havenoro_relay_smtp", 2587,
                                 host_ip=host)



class HiddenDataCase(EndToEnd):
    """F11: lookup data Exim cannot read defers the mail, never sends it
    directly (the test classes below).

    The daemon repairs its output directory at each apply; between applies
    an admin's chmod, a broken mount or a disk error can still hide the
    lookup files from Exim. Each test hides one part of the output
    directory behind the daemon's back, sends from a relay domain and from
    a domain without one, then puts the part back and runs the queue.
    Exim's own queue runner waits an hour, so what moves was moved by the
    test; the MX sink must never receive anything.
    """

    queue_interval = "1h"
    OWN = ("own", "Hidden-Own-Secret-9Kp")
    SRV = ("srv", "Hidden-Srv-Secret-5Rt")

    @classmethod
    def make_tree(cls):
        cls.own = cls.start_relay("relay-own")
        cls.default = cls.start_relay("relay-default")
        p = cls.panel
        p.write_user("alice")
        p.write_server_relay(cls.settings(cls.default, *cls.SRV))
        p.write_domain("alice", "own.example",
                       {"smtp_relay": cls.settings(cls.own, *cls.OWN)})
        p.write_domain("alice", "norelay.example", {})
        cls.apply_ok()

    def hide(self, relative, mode=0o700):
        """Makes output_dir/relative root:root and root-only; returns the
        function that puts owner and mode back (also run at cleanup)."""
        path = self.output_dir / relative
        st = path.stat()

        def put_back():
            os.chown(path, st.st_uid, st.st_gid)
            path.chmod(stat.S_IMODE(st.st_mode))
        os.chown(path, 0, 0)
        path.chmod(mode)
        self.addCleanup(put_back)
        return put_back

    def send_from(self, *domains):
        sent = [self.send(f"a@{d}", key=f"{self.id()}:{d}") for d in domains]
        for s in sent:
            self.exim.wait_delivery(s.msgid)
        return sent

    def assertDeferredBy(self, sent, router, transports=(None,)):
        """The message was deferred by `router`, at routing (transport
        None) or by one of `transports`, and is still queued."""
        kind, line = self.exim.delivery(sent.msgid)
        self.assertEqual(kind, "==", self.story(sent))
        self.assertEqual(h.log_field(line, "R"), router, line)
        self.assertIn(h.log_field(line, "T"), transports, line)
        self.assertEqual(self.arrivals(sent), [], self.story(sent))
        self.assertIn(sent.msgid, self.exim.exim("-bp").stdout,
                      "no longer queued")
        bounced = [line for line in self.exim.message_log(sent.msgid)
                   if re.search(r" \*\* |Frozen", line)]
        self.assertEqual(bounced, [], "bounced or frozen")

    def assertNothingWentDirect(self):
        self.assertEqual([m["mail_from"] for m in self.sink.received()], [])

    def release(self, put_back, *sent):
        """Puts the part back, runs the queue, waits for every message.

        A router's deferral leaves a retry record for the recipient,
        which an ordinary queue run honours (15 minutes with the
        example's rules): the forced run (-qf) is the one an admin starts
        after the repair.
        """
        put_back()
        run = self.exim.exim("-qf", timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        for s in sent:
            h.wait_until(lambda: self.arrivals(s), 20,
                         f"<{s.sender}> at a relay after the queue run"
                         f"{self.story(s)}")

    def assertBothRelayed(self, own, norelay):
        self.assertRelayedAs(own, self.own, *self.OWN)
        self.assertRelayedAs(norelay, self.default, *self.SRV)
        self.assertNothingWentDirect()


class UnreadableDataTest(HiddenDataCase):
    """F11 with every Exim process as Debian-exim (-C drops root), the
    reading of the configuration included, as in the field report."""

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.make_tree()

    def test_F11_output_directory_unreadable_defers_all_remote_mail(self):
        """verifies the field case, the output directory root:root 0700:
        .include_if_exists skips a generation.conf Exim cannot stat, so no
        havenoro router is there at all; the example's
        havenoro_unavailable router defers instead of direct delivery."""
        put_back = self.hide("")
        own, norelay = self.send_from("own.example", "norelay.example")
        for s in (own, norelay):
            self.assertDeferredBy(s, "havenoro_unavailable")
        self.assertNothingWentDirect()
        self.release(put_back, own, norelay)
        self.assertBothRelayed(own, norelay)

    def test_F11_live_generation_unreadable_defers(self):
        """verifies generations/ 0700: "current" is there but leads
        nowhere Exim may go; deferred the same way."""
        put_back = self.hide("generations")
        own, norelay = self.send_from("own.example", "norelay.example")
        for s in (own, norelay):
            self.assertDeferredBy(s, "havenoro_unavailable")
        self.release(put_back, own, norelay)
        self.assertBothRelayed(own, norelay)

    def test_F11_domains_directory_unreadable_defers(self):
        """verifies domains/ 0700: no sender can be told apart from a
        relay domain, so neither takes the server-wide relay or goes
        direct."""
        put_back = self.hide("domains")
        own, norelay = self.send_from("own.example", "norelay.example")
        self.assertDeferredBy(norelay, "havenoro_relay")
        # A delivery whose router found the domain a moment before defers
        # at its transport, which cannot read the file either: just as
        # safe.
        self.assertDeferredBy(own, "havenoro_relay",
                              (None, "havenoro_relay_smtp"))
        self.assertNothingWentDirect()
        self.release(put_back, own, norelay)
        self.assertBothRelayed(own, norelay)

    def test_F11_server_wide_relay_unreadable_defers(self):
        """verifies default/ 0700: a domain without a relay is deferred,
        not sent direct as if no server-wide relay were set; a relay
        domain still goes through its own relay."""
        put_back = self.hide("default")
        own, norelay = self.send_from("own.example", "norelay.example")
        self.assertRelayedAs(own, self.own, *self.OWN)
        self.assertDeferredBy(norelay, "havenoro_default")
        self.assertNothingWentDirect()
        self.release(put_back, norelay)
        self.assertBothRelayed(own, norelay)

    def test_F11_suspended_list_unreadable_defers(self):
        """verifies suspended/ 0700: whether a domain without a relay is
        suspended is unknown, so it is deferred rather than relayed or
        sent direct."""
        put_back = self.hide("suspended")
        (norelay,) = self.send_from("norelay.example")
        self.assertDeferredBy(norelay, "havenoro_default")
        self.assertNothingWentDirect()
        self.release(put_back, norelay)
        self.assertRelayedAs(norelay, self.default, *self.SRV)


class InstalledExim(h.EximInstance):
    """The test Exim with root privilege, as a server's Exim runs.

    Exim keeps root with -C only for a file named in its trusted list
    (/etc/exim4/trusted_configs). Every Exim command here runs in a private
    mount namespace whose /etc/exim4 is a directory of the test holding
    that list, so nothing outside sees it. Routers then run as root, as on
    a server, and only the transports as Debian-exim.
    """

    def __init__(self, workdir, *args, **kwargs):
        super().__init__(workdir, *args, **kwargs)
        etc = self.dir / "etc-exim4"
        etc.mkdir(exist_ok=True)
        etc.chmod(0o755)
        (etc / "trusted_configs").write_text(f"{self.config_file}\n")
        (etc / "trusted_configs").chmod(0o644)
        self.binary = self.dir / "exim-as-installed"
        self.binary.write_text(
            "#!/bin/sh\n"
            "exec unshare --mount --propagation private -- sh -c "
            f"'mount --bind \"$0\" /etc/exim4 && exec {h.EXIM} \"$@\"' "
            f"{etc} \"$@\"\n")
        self.binary.chmod(0o755)

    def exim(self, *args, input=None, timeout=60):
        return subprocess.run([str(self.binary), "-C", str(self.config_file),
                               *map(str, args)], input=input,
                              capture_output=True, text=True,
                              timeout=timeout)

    def start(self, timeout=20, queue_interval="15s"):
        self.daemon = h.ProcessGroup(
            [self.binary, "-C", self.config_file, "-bdf",
             f"-q{queue_interval}"],
            self.dir / "daemon.stdout", self.dir / "daemon.stderr")
        try:
            h.wait_until(self._started, timeout, "Exim daemon to answer")
        except h.HarnessError:
            self.stop()
            raise


class UnreadableDataAsInstalledTest(HiddenDataCase):
    """F11 with Exim as installed: routers run as root and read every
    file, the smtp transports run as Debian-exim. A relay file only root
    can read must defer the delivery in the transport. Without that, the
    transport's TLS, verification and login lists read as empty and the
    message went to the relay without a login: refused, a bounce.
    """

    @classmethod
    def setUpClass(cls):
        # start_parts builds the Exim it finds as h.EximInstance.
        real, h.EximInstance = h.EximInstance, InstalledExim
        try:
            cls.start_parts()
        finally:
            h.EximInstance = real
        cls.relayd_overrides = {"exim_binary": str(cls.exim.binary)}
        cls.make_tree()

    def assertNoHostHeld(self):
        """A deferral in the transport is about this message's files, not
        the relay: no retry record may hold the relay's other domains
        (Exim keeps one per relay host, shared by all its domains)."""
        hosts = [k for k in self.exim.retry_records() if k.startswith("T:")]
        self.assertEqual(hosts, [])

    def test_exim_keeps_root(self):
        """verifies the set-up: this Exim never gave up root for -C."""
        self.assertEqual([line for line in self.exim.log_lines("panic")
                          if h.LOST_PRIVILEGE in line], [])

    def test_F11_relay_file_only_root_can_read_defers(self):
        """verifies smtp_relay.conf 0600 root:root: the router (root) picks
        the relay, the transport (Debian-exim) cannot read the file and
        defers; nothing reaches the relay, nothing bounces."""
        logins = len(self.own.auth_attempts())
        put_back = self.hide("domains/own.example/smtp_relay.conf", 0o600)
        (own,) = self.send_from("own.example")
        self.assertDeferredBy(own, "havenoro_relay", ("havenoro_relay_smtp",))
        self.assertEqual(len(self.own.auth_attempts()), logins)
        self.assertNoHostHeld()
        self.release(put_back, own)
        self.assertRelayedAs(own, self.own, *self.OWN)
        self.assertNothingWentDirect()

    def test_F11_output_directory_root_only_defers(self):
        """verifies the field case on a server: the output directory
        root:root 0700 defers relay and server-wide relay mail alike."""
        put_back = self.hide("")
        own, norelay = self.send_from("own.example", "norelay.example")
        self.assertDeferredBy(own, "havenoro_relay", ("havenoro_relay_smtp",))
        self.assertDeferredBy(norelay, "havenoro_default",
                              ("havenoro_relay_smtp",))
        self.assertNothingWentDirect()
        self.assertNoHostHeld()
        self.release(put_back, own, norelay)
        self.assertBothRelayed(own, norelay)

if __name__ == "__main__":
    unittest.main()
