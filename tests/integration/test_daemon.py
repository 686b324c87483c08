#!/usr/bin/python3
"""End to end: havenoro-relayd as a daemon, and havenoro-relayctl.

Each test class starts a private Exim (tests/support/harness.py) and the
real daemon on a temporary panel tree and control socket
(tests/support/daemon_harness.py). The daemon is never told about a save
unless a test says so: it must see the panel's files change on its own.
What it applied is read back from its output directory, the files Exim
reads.

Run: /usr/bin/python3 tests/integration/test_daemon.py [-v] [-k burst]
HAVENORO_RELAYD and HAVENORO_RELAYCTL name the binaries (default build/);
HAVENORO_KEEP_WORKDIR=1 keeps the temporary directories.
"""

import base64
import grp
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import daemon_harness as dh  # noqa: E402
import harness as h  # noqa: E402

SAVE_HOOK = h.REPO / "contrib" / "havenoro-save-hook"
WAIT = 30  # seconds for the daemon to see and apply one change


class DaemonTest(unittest.TestCase):
    """A private Exim and one daemon, shared by a class's tests."""

    relayd_overrides = {}

    @classmethod
    def setUpClass(cls):
        cls.binary = h.relayd_binary()
        dh.relayctl_binary()  # missing is a failure, never a skip
        cls.work = h.make_workdir(f"havenoro-{cls.__name__}-")
        if not os.environ.get("HAVENORO_KEEP_WORKDIR"):
            cls.addClassCleanup(h.remove_tree, cls.work)
        cls.ca = h.TestCA(cls.work / "ca")
        cls.panel = h.PanelTree(cls.work / "panel")
        cls.output_dir = cls.work / "relay-out"
        # No mail is sent here: the MX sink port only has to be valid.
        cls.exim = h.EximInstance(cls.work, cls.output_dir, h.free_port())
        cls.addClassCleanup(cls.exim.stop)
        cls.exim.start()
        cls.prepare_panel()
        cls.daemon = cls.start_daemon()

    @classmethod
    def prepare_panel(cls):
        """Writes what the tree holds before the daemon starts."""
        cls.panel.write_user("alice")
        cls.panel.write_server_relay(None)

    @classmethod
    def config(cls, **overrides):
        merged = dict(cls.relayd_overrides)
        merged.update(overrides)
        return h.relayd_config(cls.panel, cls.exim, cls.ca, **merged)

    @classmethod
    def start_daemon(cls, name="relayd", **overrides):
        daemon = dh.RelaydDaemon(cls.binary, cls.config(**overrides),
                                 cls.work, name)
        cls.addClassCleanup(daemon.kill)
        daemon.wait_ready()
        return daemon

    # Reading back what the daemon applied.

    def credential(self, domain):
        """The domain's live credential file as a dict, or None."""
        path = (self.output_dir / "default" if domain is None
                else self.output_dir / "domains" / domain) / "smtp_relay.conf"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        fields = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition(": ")
                fields[key] = value
        return fields

    def route_of(self, domain):
        fields = self.credential(domain)
        return fields and fields.get("route")

    def wait_route(self, domain, port, timeout=WAIT):
        want = f"localhost:{port}"
        h.wait_until(lambda: self.route_of(domain) == want, timeout,
                     f"{domain} to route to {want} (now "
                     f"{self.route_of(domain)})")

    def wait_no_relay(self, domain, timeout=WAIT):
        h.wait_until(lambda: self.credential(domain) is None, timeout,
                     f"{domain}'s relay to be removed")

    def save(self, domain, port, user="alice", **relay):
        self.panel.write_domain(user, domain, {"smtp_relay": h.relay_settings(
            host="localhost", port=port, **relay)})

    def domain_json(self, domain, port):
        return json.dumps({"domain": domain, "smtp_relay": {
            "enabled": True, "host": "localhost", "port": port}})


class WatchTest(DaemonTest):
    """The daemon sees the panel's saves on its own, however made."""

    def test_saved_domain_is_applied_without_any_command(self):
        """verifies a new domain file goes live with no reconcile sent."""
        self.save("saved.example", 2601)
        self.wait_route("saved.example", 2601)
        route = self.exim.route("a@saved.example", "x@example.net")
        self.assertEqual(route.router, "havenoro_relay", route)

    def test_file_renamed_into_place_is_applied(self):
        """verifies the panel's .tmp-and-rename save changes the relay."""
        self.save("renamed.example", 2602)
        self.wait_route("renamed.example", 2602)
        self.save("renamed.example", 2603)  # PanelTree saves by rename
        self.wait_route("renamed.example", 2603)

    def test_file_written_in_place_is_applied(self):
        """verifies an editor's in-place write counts once it is closed."""
        self.panel.write_domain_raw("alice", "inplace.example",
                                    self.domain_json("inplace.example", 2604))
        self.wait_route("inplace.example", 2604)
        self.panel.write_domain_raw("alice", "inplace.example",
                                    self.domain_json("inplace.example", 2605))
        self.wait_route("inplace.example", 2605)

    def test_half_written_file_is_not_a_setting_until_it_parses(self):
        """verifies a truncated file keeps the live relay until complete."""
        self.save("half.example", 2606)
        self.wait_route("half.example", 2606)
        whole = self.domain_json("half.example", 2607)
        self.panel.write_domain_raw("alice", "half.example", whole[:30])
        h.wait_until(lambda: self.daemon.request(
            "domain-get", domain="half.example")["arguments"]["last_error"],
            WAIT, "the half-written file to be reported")
        self.assertEqual(self.route_of("half.example"), "localhost:2606")
        self.panel.write_domain_raw("alice", "half.example", whole)
        self.wait_route("half.example", 2607)
        # The live file changes before the apply's outcome is recorded.
        h.wait_until(lambda: self.daemon.request(
            "domain-get", domain="half.example")["arguments"]["last_error"]
            is None, WAIT, "the error to clear once the file parses")

    def test_deleted_domain_relay_is_removed(self):
        """verifies removing a domain's file removes its relay."""
        self.save("deleted.example", 2608)
        self.wait_route("deleted.example", 2608)
        self.panel.remove_domain("alice", "deleted.example")
        self.wait_no_relay("deleted.example")
        self.assertFalse((self.output_dir / "domains" /
                          "deleted.example").exists())
        h.wait_until(lambda: self.daemon.request(
            "domain-get", domain="deleted.example")["result"] == 3, WAIT,
            "the removed domain to be unknown to the daemon")

    def test_new_user_directory_is_watched_as_it_appears(self):
        """verifies a user created after start, then a second save in its
        new mail directory, are both seen."""
        self.panel.write_user("newuser")
        self.save("first.newuser.example", 2609, user="newuser")
        self.wait_route("first.newuser.example", 2609)
        self.save("second.newuser.example", 2610, user="newuser")
        self.wait_route("second.newuser.example", 2610)

    def test_removed_user_directory_removes_its_relays(self):
        """verifies deleting a whole user removes every relay it had."""
        self.panel.write_user("leaving")
        self.save("a.leaving.example", 2611, user="leaving")
        self.save("b.leaving.example", 2612, user="leaving")
        self.wait_route("a.leaving.example", 2611)
        self.wait_route("b.leaving.example", 2612)
        shutil.rmtree(self.panel.user_dir("leaving"))
        self.wait_no_relay("a.leaving.example")
        self.wait_no_relay("b.leaving.example")

    def test_server_wide_file_is_applied(self):
        """verifies conf/mail.json changes go live and away again."""
        self.panel.write_server_relay(h.relay_settings(host="localhost",
                                                       port=2613))
        self.wait_route(None, 2613)
        self.panel.write_server_relay(None)
        self.wait_no_relay(None)

    def test_suspending_the_user_is_seen(self):
        """verifies a change of user.json re-reads that user's domains."""
        self.panel.write_user("pausing")
        self.save("pausing.example", 2614, user="pausing")
        self.wait_route("pausing.example", 2614)
        self.panel.write_user("pausing", suspended=True)
        marker = self.output_dir / "suspended" / "pausing.example"
        h.wait_until(marker.exists, WAIT, "the suspended marker")
        # One apply writes its files first and removes the relay's last.
        self.wait_no_relay("pausing.example")

    def test_z_burst_of_200_saves_costs_a_few_applies(self):
        """verifies 200 saves in a burst lead to a few applies and the
        last save of every domain is what is live."""
        domains = [f"burst{i:02d}.example" for i in range(20)]
        self.panel.write_user("burst")
        for d in domains:
            self.save(d, 3000, user="burst")
        for d in domains:
            self.wait_route(d, 3000)
        self.daemon.wait_idle()
        before = self.daemon.applies()

        last = {}
        for i in range(200):
            d = domains[i % len(domains)]
            last[d] = 3100 + i
            self.save(d, last[d], user="burst")
        for d in domains:
            self.wait_route(d, last[d], timeout=60)
        self.daemon.wait_idle()
        applies = self.daemon.applies() - before
        print(f"\nburst: 200 saves of {len(domains)} domains took "
              f"{applies} applies", file=sys.stderr)
        self.assertGreaterEqual(applies, 1)
        self.assertLessEqual(applies, 10)
        for d in domains:
            self.assertEqual(self.route_of(d), f"localhost:{last[d]}", d)


class ControlSocketTest(DaemonTest):
    """The control socket's protocol, limits and misbehaving clients."""

    relayd_overrides = {"idle_timeout_s": 2, "max_request_bytes": 4096,
                        "control_socket_group": h.EXIM_USER}
    password = "Pw-Never-In-A-Reply-8731"

    @classmethod
    def prepare_panel(cls):
        super().prepare_panel()
        cls.panel.write_domain("alice", "secret.example", {
            "smtp_relay": h.relay_settings(host="localhost", port=2701,
                                           username="someone",
                                           password=cls.password)})

    def connect(self):
        conn = dh.ControlConnection(self.daemon.socket, timeout=30)
        self.addCleanup(conn.close)
        return conn

    def raw(self, command, **arguments):
        """The reply line exactly as the daemon sent it."""
        conn = self.connect()
        doc = {"command": command, "arguments": arguments}
        conn.send(json.dumps(doc) + "\n")
        return conn.read_line()

    def test_socket_is_0660_with_the_configured_group(self):
        """verifies the socket's mode and group."""
        st = os.stat(self.daemon.socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, grp.getgrnam(h.EXIM_USER).gr_gid)

    def test_every_reply_has_the_same_envelope(self):
        """verifies result, text and arguments in every reply."""
        for command, args in (("status-get", {}), ("version-get", {}),
                              ("domain-list", {}), ("nope", {}),
                              ("domain-get", {"domain": "secret.example"})):
            with self.subTest(command=command):
                reply = json.loads(self.raw(command, **args))
                self.assertEqual(set(reply), {"result", "text", "arguments"})
                self.assertIsInstance(reply["result"], int)
                self.assertIsInstance(reply["text"], str)
                self.assertIsInstance(reply["arguments"], dict)

    def test_not_json_gets_an_error_and_the_connection_stays(self):
        """verifies a line that is not JSON is answered, then the next."""
        conn = self.connect()
        conn.send("hello daemon\n")
        reply = json.loads(conn.read_line())
        self.assertEqual(reply["result"], 4, reply)
        self.assertEqual(conn.request("version-get")["result"], 0)

    def test_unknown_command_is_named_in_the_reply(self):
        """verifies an unknown command gets result 2."""
        reply = self.connect().request("domain-explode")
        self.assertEqual(reply["result"], 2, reply)
        self.assertIn("domain-explode", reply["text"])

    def test_bad_arguments_are_refused(self):
        """verifies wrong types and bad names get result 4."""
        conn = self.connect()
        for command, args in (("reconcile", {"domain": 5}),
                              ("reconcile", {"wait": "yes"}),
                              ("reconcile", {"domain": "a.example",
                                             "server": True}),
                              ("domain-get", {"domain": "Not A Domain"}),
                              ("domain-get", {})):
            with self.subTest(command=command, args=args):
                reply = conn.request(command, **args)
                self.assertEqual(reply["result"], 4, reply)

    def test_oversized_line_gets_an_error_and_is_closed(self):
        """verifies a line past max_request_bytes is refused."""
        conn = self.connect()
        conn.send('{"command": "status-get", "x": "' + "x" * 5000)
        reply = json.loads(conn.read_line())
        self.assertEqual(reply["result"], 4, reply)
        self.assertIn("4096", reply["text"])
        self.assertTrue(conn.closed_by_peer(5))
        self.assertEqual(self.daemon.request("version-get")["result"], 0)

    def test_half_a_line_is_dropped_after_the_idle_timeout(self):
        """verifies a client that stalls mid-line is closed, while
        others are served meanwhile."""
        stalled = self.connect()
        stalled.send('{"command": "status-')
        started = time.monotonic()
        self.assertEqual(self.daemon.request("status-get")["result"], 0)
        self.assertLess(time.monotonic() - started, 2)
        self.assertTrue(stalled.closed_by_peer(10))
        self.assertGreaterEqual(time.monotonic() - started, 1.5)

    def test_silent_client_is_dropped_after_the_idle_timeout(self):
        """verifies a connection that says nothing is closed."""
        self.assertTrue(self.connect().closed_by_peer(10))

    def test_many_clients_at_once_while_one_waits_for_an_apply(self):
        """verifies 40 clients are served while a reconcile waits."""
        results = []
        errors = []

        def ask(command, **args):
            try:
                results.append(self.daemon.request(command, **args))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=ask, args=("reconcile",),
                                    kwargs={"domain": "secret.example",
                                            "wait": True})]
        threads += [threading.Thread(target=ask, args=("status-get",))
                    for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 41)
        self.assertTrue(all(r["result"] == 0 for r in results), results)

    def test_reconcile_waits_for_the_outcome_of_its_domain(self):
        """verifies reconcile with wait reports applied or rejected."""
        self.save("reconciled.example", 2702)
        reply = self.daemon.request("reconcile", domain="reconciled.example",
                                    wait=True)
        self.assertEqual(reply["result"], 0, reply)
        self.assertEqual(self.route_of("reconciled.example"),
                         "localhost:2702")
        # Its own outcome, and the apply summed up rather than listed.
        args = reply["arguments"]
        self.assertEqual(args["domain"]["domain"], "reconciled.example")
        self.assertIn(args["domain"]["result"], ("applied", "unchanged"))
        for key in ("written", "removed", "domains", "problems_total"):
            self.assertIsInstance(args["apply"][key], int, args["apply"])
        self.save("reconciled.example", 70000)
        reply = self.daemon.request("reconcile", domain="reconciled.example",
                                    wait=True)
        self.assertEqual(reply["result"], 1, reply)
        self.assertIn("smtp_relay.port", reply["text"])
        self.assertNotIn("\n", reply["text"])
        self.assertEqual(self.route_of("reconciled.example"),
                         "localhost:2702")  # the last good one stays

    def test_reconcile_without_wait_answers_at_once(self):
        """verifies a reconcile that does not wait is queued."""
        reply = self.daemon.request("reconcile")
        self.assertEqual(reply["result"], 0, reply)
        self.assertIn("queued", reply["text"])

    def test_config_test_applies_nothing(self):
        """verifies config-test reports a missing file and leaves it."""
        self.save("planned.example", 2703)
        self.wait_route("planned.example", 2703)
        self.daemon.wait_idle()
        live = self.output_dir / "domains" / "planned.example" / \
            "smtp_relay.conf"
        live.unlink()  # behind the daemon's back
        reply = self.daemon.request("config-test")
        self.assertEqual(reply["result"], 0, reply)
        self.assertIn("domains/planned.example/smtp_relay.conf",
                      reply["arguments"]["would_write"])
        self.assertFalse(live.exists())
        self.daemon.request("reconcile", domain="planned.example", wait=True)
        self.assertTrue(live.exists())

    def test_status_get_has_the_documented_keys(self):
        """verifies status-get carries what docs/control-protocol.md
        lists."""
        status = self.daemon.status()
        for key in ("version", "uptime_s", "generation", "last_apply",
                    "domains", "server_relay", "exim", "errors",
                    "errors_total", "warnings", "warnings_total", "pid",
                    "applies", "queued"):
            self.assertIn(key, status)
        for key in ("at", "took_ms", "result", "changed_domains",
                    "changed_domains_total"):
            self.assertIn(key, status["last_apply"])
        for key in ("relayed", "default", "rejected"):
            self.assertIn(key, status["domains"])
        self.assertTrue(status["exim"]["reloaded"], status["exim"])

    def test_no_password_in_any_reply(self):
        """verifies no reply carries the password, plain or base64; the
        Test button's included, from a relay that takes the password."""
        encoded = base64.b64encode(self.password.encode()).decode()
        relay = h.Relay(self.work, "no-password", ca=self.ca,
                        check_accounts=True)
        self.addCleanup(relay.stop)
        relay.add_account("someone", self.password)
        self.panel.write_domain("alice", "probed.example", {
            "smtp_relay": h.relay_settings(relay, username="someone",
                                           password=self.password)})
        self.addCleanup(self.panel.remove_domain, "alice", "probed.example")
        lines = [self.raw("status-get"), self.raw("domain-list"),
                 self.raw("domain-get", domain="secret.example"),
                 self.raw("config-test"),
                 self.raw("reconcile", domain="secret.example", wait=True),
                 self.raw("reconcile", wait=True),
                 self.raw("relay-test", domain="secret.example"),
                 self.raw("relay-test", domain="probed.example")]
        for line in lines:
            self.assertNotIn(self.password, line)
            self.assertNotIn(encoded, line)
        domain = json.loads(lines[2])["arguments"]
        self.assertEqual(domain["relay"]["username"], "someone")
        probed = json.loads(lines[-1])
        self.assertEqual(probed["result"], 0, probed)
        self.assertIn("C: AUTH PLAIN <redacted>",
                      probed["arguments"]["probe"]["transcript"])
        self.assertEqual(len(relay.auth_attempts()), 1)
        self.assertNotIn(self.password, self.daemon.log_text())

    def test_sighup_rereads_the_configuration(self):
        """verifies SIGHUP applies a new configuration and keeps the old
        one when the new one is broken."""
        good = dict(self.daemon.config)
        self.daemon.write_config({**good, "resync_interval_s": 600})
        self.daemon.signal(signal.SIGHUP)
        h.wait_until(lambda: self.daemon.log_events("config.reload"), WAIT,
                     "config.reload in the log")
        self.daemon.write_config({**good, "no_such_key": 1})
        self.daemon.signal(signal.SIGHUP)
        h.wait_until(lambda: self.daemon.log_events("config.reload_failed"),
                     WAIT, "config.reload_failed in the log")
        self.assertEqual(self.daemon.request("version-get")["result"], 0)
        self.daemon.write_config(good)


class StatusListsTest(DaemonTest):
    """status-get stays small on a big panel: its lists are cut short
    with their totals, and domain-list has every domain."""

    BROKEN = 25

    @classmethod
    def prepare_panel(cls):
        super().prepare_panel()
        for i in range(cls.BROKEN):
            name = f"broken{i:02d}.example"
            cls.panel.write_domain_raw("alice", name, json.dumps({
                "domain": name, "smtp_relay": {"enabled": True,
                                               "host": "localhost",
                                               "port": 0}}))
            cls.panel.write_domain("alice", f"fine{i:02d}.example", {
                "smtp_relay": h.relay_settings(host="localhost",
                                               port=3200 + i)})

    def test_lists_are_cut_with_their_totals(self):
        """verifies 20 errors of 25 with the total, the first apply's
        changed domains likewise, and every domain in domain-list."""
        self.daemon.wait_idle()
        status = self.daemon.status()
        self.assertEqual(len(status["errors"]), 20, status["errors"])
        self.assertEqual(status["errors_total"], self.BROKEN)
        names = {d["domain"] for d in
                 self.daemon.request("domain-list")["arguments"]["domains"]}
        self.assertEqual(len(names), 2 * self.BROKEN)
        cp = self.daemon.ctl("status")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("... and 5 more: havenoro-relayctl domains", cp.stdout)

    def test_changed_domains_are_cut_with_their_total(self):
        """verifies a full reconcile that rewrote 25 domains lists 20."""
        shutil.rmtree(self.output_dir / "domains")
        reply = self.daemon.request("reconcile", wait=True)
        self.assertEqual(reply["result"], 1, reply)  # the broken ones
        self.assertIn("(and 24 more)", reply["text"])
        last = self.daemon.status()["last_apply"]
        self.assertEqual(len(last["changed_domains"]), 20, last)
        self.assertEqual(last["changed_domains_total"], self.BROKEN)
        self.assertEqual(reply["arguments"]["apply"]["problems_total"],
                         self.BROKEN)


class LifecycleTest(DaemonTest):
    """Start, refusal to share a socket, and a clean stop."""

    def test_a_second_daemon_does_not_take_a_live_socket(self):
        """verifies a daemon refuses a socket another one answers on."""
        other = dh.RelaydDaemon(self.binary, self.config(
            control_socket=str(self.daemon.socket),
            output_dir=str(self.work / "other-out")), self.work, "other")
        self.addCleanup(other.kill)
        h.wait_until(lambda: not other.running(), WAIT, "it to give up")
        self.assertNotEqual(other.stop(), 0)
        self.assertIn("another havenoro-relayd answers", other.log_text())
        self.assertEqual(self.daemon.request("version-get")["result"], 0)

    def test_z_sigterm_stops_cleanly_and_removes_the_socket(self):
        """verifies SIGTERM: exit 0, socket gone, a live generation left
        whole; a stale socket does not stop the next start."""
        self.save("stopping.example", 2801)
        self.wait_route("stopping.example", 2801)
        self.assertEqual(self.daemon.stop(), 0, self.daemon.log_text())
        self.assertFalse(self.daemon.socket.exists())
        current = self.output_dir / "current"
        self.assertTrue((current / "generation.conf").exists())
        self.assertTrue(self.daemon.log_events("daemon.stop"))

        # A daemon killed outright leaves its socket file behind.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(self.daemon.socket))
        stale.close()
        again = self.start_daemon("again",
                                  control_socket=str(self.daemon.socket))
        self.assertEqual(again.request("version-get")["result"], 0)
        self.assertEqual(again.stop(), 0)


class StopWhileWaitingTest(DaemonTest):
    """SIGTERM while save hooks wait: each hears how its change ended."""

    @classmethod
    def prepare_panel(cls):
        super().prepare_panel()
        # The mail directory is there before the daemon watches it.
        cls.panel.write_domain("alice", "before.example", {})

    @classmethod
    def start_daemon(cls, name="relayd", **overrides):
        # The daemon's Exim checks go through a script that holds them,
        # bounded, while the hold file exists: an apply held halfway.
        cls.hold = cls.work / "exim-checks.hold"
        cls.held = cls.work / "exim-checks.held"
        script = cls.work / "held-exim.sh"
        script.write_text("#!/bin/sh\n"
                          f"if [ -e '{cls.hold}' ]; then\n"
                          f"  touch '{cls.held}'; n=0\n"
                          f"  while [ -e '{cls.hold}' ] && [ $n -lt 600 ]\n"
                          "  do\n"
                          "    sleep 0.1; n=$((n + 1))\n"
                          "  done\n"
                          "fi\n"
                          f"exec '{h.EXIM}' \"$@\"\n")
        script.chmod(0o755)
        return super().start_daemon(name, exim_binary=str(script),
                                    **overrides)

    def start_ctl(self, *args):
        proc = subprocess.Popen(
            [str(dh.relayctl_binary()), "--socket", str(self.daemon.socket),
             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True)
        self.addCleanup(proc.kill)  # nothing once it has exited
        return proc

    def wait_reconciles(self, count):
        """Waits until the daemon has read count reconcile requests."""
        def seen():
            return sum("command=reconcile" in line for line in
                       self.daemon.log_events("control.request")) >= count
        h.wait_until(seen, WAIT, f"{count} reconcile requests")

    def test_sigterm_answers_every_waiting_reconcile(self):
        """verifies SIGTERM while two save hooks wait: the one of the apply
        running hears it (exit 0); the one queued behind it hears that the
        daemon is stopping and applies the change when it starts again
        (that one line, exit 2 as for a daemon that cannot be reached: the
        settings were not rejected), not a dropped connection; a request
        that comes while the last apply still runs hears the same at once;
        the next start applies both."""
        self.hold.touch()
        self.addCleanup(self.hold.unlink, missing_ok=True)
        self.save("held.example", 3101)
        h.wait_until(self.held.exists, WAIT, "the apply's Exim check")
        self.assertEqual(self.daemon.status()["queued"], 0)
        joined = self.start_ctl("reconcile", "--domain", "held.example",
                                "--wait")
        self.wait_reconciles(1)
        # The watcher's thread hands it to the running apply at once; the
        # next save must come after, or the request would wait for it.
        time.sleep(0.5)
        self.save("queued.example", 3102)
        queued = self.start_ctl("reconcile", "--domain", "queued.example",
                                "--wait")
        self.wait_reconciles(2)

        self.daemon.signal(signal.SIGTERM)
        h.wait_until(lambda: self.daemon.log_events("daemon.stop"), WAIT,
                     "the stop to begin")
        self.save("late.example", 3103)
        late = self.start_ctl("reconcile", "--domain", "late.example",
                              "--wait")
        out, err = late.communicate(timeout=10)
        self.assertTrue(self.hold.exists(), "the last apply ended first")
        self.assertEqual(late.returncode, 2, out + err)
        self.assertIn("late.example: not applied yet: havenoro-relayd is "
                      "stopping", err)
        self.hold.unlink()
        out, err = joined.communicate(timeout=60)
        self.assertEqual(joined.returncode, 0, out + err)
        self.assertTrue(out.startswith("held.example: applied"), out)
        out, err = queued.communicate(timeout=60)
        self.assertEqual(queued.returncode, 2, out + err)
        self.assertEqual(out, "")
        self.assertEqual(err, "queued.example: not applied yet: "
                         "havenoro-relayd is stopping; the change will be "
                         "applied when it starts again\n")
        self.assertEqual(self.daemon.wait(), 0, self.daemon.log_text())
        self.assertFalse(self.daemon.socket.exists())
        self.assertTrue(self.daemon.log_events("daemon.dropped"))
        self.assertEqual(self.route_of("held.example"), "localhost:3101")
        self.assertIsNone(self.credential("queued.example"))

        again = self.start_daemon("again")
        self.wait_route("queued.example", 3102)
        self.wait_route("late.example", 3103)
        self.assertEqual(again.stop(), 0)


class StopDuringRelayTestTest(DaemonTest):
    """SIGTERM while the panel's Test button waits on a relay."""

    @classmethod
    def prepare_panel(cls):
        super().prepare_panel()
        cls.silent = h.SilentListener()
        cls.addClassCleanup(cls.silent.stop)
        cls.panel.write_domain("alice", "silent.example", {
            "smtp_relay": h.relay_settings(
                host="127.0.0.1", port=cls.silent.port, security="none")})

    def test_sigterm_answers_a_running_relay_test(self):
        """verifies that a relay test waiting for a banner that never comes
        hears at once that it did not finish because the daemon stops,
        rather than losing its connection (exit 2)."""
        test = subprocess.Popen(
            [str(dh.relayctl_binary()), "--socket", str(self.daemon.socket),
             "test", "silent.example"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.addCleanup(test.kill)
        h.wait_until(lambda: self.silent.connections, WAIT,
                     "the test's connection to the relay")
        self.daemon.signal(signal.SIGTERM)
        out, err = test.communicate(timeout=10)
        self.assertEqual(test.returncode, 1, out + err)
        self.assertIn("relay test not finished: havenoro-relayd is stopping; "
                      "run it again once it is back", err)
        self.assertEqual(self.daemon.wait(), 0, self.daemon.log_text())


class SystemdTest(DaemonTest):
    """What systemd hears (sd_notify) and sees in the journal."""

    @classmethod
    def start_daemon(cls, name="relayd", **overrides):
        cls.notify = dh.NotifySocket(cls.work / "notify.sock")
        cls.addClassCleanup(cls.notify.close)
        daemon = dh.RelaydDaemon(cls.binary, cls.config(**overrides),
                                 cls.work, name, env={
                                     "NOTIFY_SOCKET": str(cls.notify.path),
                                     "WATCHDOG_USEC": "1000000",
                                     "JOURNAL_STREAM": "8:12345"})
        cls.addClassCleanup(daemon.kill)
        cls.ready = cls.notify.wait_for("READY=1", 60)
        return daemon

    def test_a_ready_after_the_first_apply_with_a_status_line(self):
        """verifies READY=1 comes with a one-line STATUS= summary."""
        self.assertRegex(self.ready["STATUS"],
                         r"^generation 1; domains: .*; last apply applied "
                         r"at \S+ in \d+ ms$")

    def test_b_status_follows_each_apply(self):
        """verifies STATUS= is sent again after an apply."""
        self.save("status.example", 3001)
        message = self.notify.wait_until(
            lambda m: "1 relayed" in m.get("STATUS", ""), WAIT,
            "a STATUS= with the new domain")
        self.assertNotIn("READY", message)

    def test_c_watchdog_is_fed(self):
        """verifies WATCHDOG=1 arrives at half the watchdog interval."""
        self.notify.wait_for("WATCHDOG=1", 3)
        self.notify.wait_for("WATCHDOG=1", 3)

    def test_d_reload_says_reloading_then_ready(self):
        """verifies SIGHUP: RELOADING=1, then READY=1 after the resync."""
        self.daemon.signal(signal.SIGHUP)
        self.notify.wait_for("RELOADING=1", WAIT)
        self.notify.wait_for("READY=1", WAIT)

    def test_e_journal_lines_have_a_priority_and_no_timestamp(self):
        """verifies the log format under systemd."""
        lines = self.daemon.log_text().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[2-7]>[a-z_]+\.[a-z_]+( |$)")
        self.assertTrue(any(line.startswith("<6>daemon.ready ")
                            for line in lines), lines)

    def test_z_stop_says_stopping(self):
        """verifies SIGTERM: STOPPING=1 and exit 0."""
        self.daemon.signal(signal.SIGTERM)
        self.notify.wait_for("STOPPING=1", WAIT)
        self.assertEqual(self.daemon.stop(), 0)


class RelayctlTest(DaemonTest):
    """havenoro-relayctl against the daemon: the panel's contract."""

    @classmethod
    def prepare_panel(cls):
        super().prepare_panel()
        cls.panel.write_domain("alice", "table.example", {
            "smtp_relay": h.relay_settings(host="localhost", port=2901,
                                           username="apikey",
                                           password="Ctl-Secret-55")})

    def ctl(self, *args):
        return self.daemon.ctl(*args)

    def test_reconcile_wait_exits_0_when_applied(self):
        """verifies exit 0, the outcome on stdout, nothing on stderr."""
        self.save("ok.example", 2902)
        cp = self.ctl("reconcile", "--domain", "ok.example", "--wait")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("ok.example", cp.stdout)
        self.assertEqual(cp.stderr, "")
        self.assertEqual(self.route_of("ok.example"), "localhost:2902")

    def test_reconcile_wait_exits_1_with_the_reason_on_one_line(self):
        """verifies exit 1 and one stderr line naming the field."""
        self.save("bad.example", 0)
        cp = self.ctl("reconcile", "--domain", "bad.example", "--wait")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertEqual(len(cp.stderr.splitlines()), 1, cp.stderr)
        self.assertIn("bad.example", cp.stderr)
        self.assertIn("smtp_relay.port", cp.stderr)
        self.assertEqual(cp.stdout, "")

    def test_reconcile_exits_2_when_the_daemon_is_unreachable(self):
        """verifies exit 2 and one stderr line without a daemon."""
        cp = dh.run_ctl("--socket", self.work / "nobody.sock", "reconcile",
                        "--domain", "ok.example", "--wait")
        self.assertEqual(cp.returncode, 2, cp.stdout + cp.stderr)
        self.assertEqual(len(cp.stderr.splitlines()), 1, cp.stderr)

    def test_a_daemon_that_does_not_answer_is_unreachable(self):
        """verifies --timeout bounds the wait for a silent socket."""
        path = self.work / "silent.sock"
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(silent.close)
        silent.bind(str(path))
        silent.listen(4)
        started = time.monotonic()
        cp = dh.run_ctl("--socket", path, "--timeout", "1", "status",
                        timeout=30)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertLess(time.monotonic() - started, 10)

    def test_reconcile_server_wide_relay(self):
        """verifies --server reconciles conf/mail.json."""
        self.panel.write_server_relay(h.relay_settings(host="localhost",
                                                       port=2903))
        cp = self.ctl("reconcile", "--server", "--wait")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(self.route_of(None), "localhost:2903")
        self.panel.write_server_relay(None)
        self.assertEqual(self.ctl("reconcile", "--server", "--wait")
                         .returncode, 0)

    def test_reconcile_json_parses(self):
        """verifies --json prints the whole reply as JSON."""
        cp = self.ctl("--json", "reconcile", "--domain", "table.example",
                      "--wait")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        reply = json.loads(cp.stdout)
        self.assertEqual(reply["result"], 0)
        self.assertIn("apply", reply["arguments"])

    def test_status_json_parses(self):
        """verifies status --json, as the panel's status page reads it."""
        cp = self.ctl("status", "--json")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        status = json.loads(cp.stdout)["arguments"]
        self.assertGreaterEqual(status["generation"], 1)
        self.assertGreaterEqual(status["domains"]["relayed"], 1)

    def test_status_table_for_a_person(self):
        """verifies the status table's rows."""
        cp = self.ctl("status")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        for label in ("Daemon", "Live generation", "Last apply", "Domains",
                      "Server-wide relay", "Exim"):
            self.assertRegex(cp.stdout, rf"(?m)^{label}  ")

    def test_domain_table_for_a_person(self):
        """verifies `domain D` shows route, relay and no password."""
        cp = self.ctl("domain", "table.example")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertRegex(cp.stdout, r"(?m)^Route +relay$")
        self.assertIn("localhost:2901", cp.stdout)
        self.assertIn("user 'apikey', password set", cp.stdout)
        self.assertNotIn("Ctl-Secret-55", cp.stdout)
        cp = self.ctl("domain", "unknown.example")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("unknown.example", cp.stderr)

    def test_domains_table_for_a_person(self):
        """verifies the domain list has a header and one line each."""
        cp = self.ctl("domains")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        lines = cp.stdout.splitlines()
        self.assertRegex(lines[0], r"^DOMAIN +USER +ROUTE +RELAY +LAST ERROR")
        self.assertTrue(any(line.startswith("table.example ")
                            for line in lines))

    def hold_open(self, domain, port, **relay):
        """Writes a domain file in place and keeps it open.

        The daemon acts on a file when its writer closes it (IN_CLOSE_WRITE)
        or renames it into place, so until the returned descriptor is
        closed only a plan, which reads the panel itself, sees the change.
        """
        data = {"domain": domain, "suspended": False,
                "smtp_relay": h.relay_settings(host="localhost", port=port,
                                               **relay)}
        path = self.panel.domain_file("alice", domain)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, json.dumps(data).encode())
        return fd

    def test_plan_shows_what_would_change(self):
        """verifies plan shows per domain the live route and the new one,
        a new password only as "password changed", and applies nothing."""
        self.save("gone.example", 2912)
        self.wait_route("gone.example", 2912)
        self.daemon.wait_idle()
        applies = self.daemon.applies()
        table = self.credential("table.example")
        fds = [self.hold_open("table.example", 2911, username="apikey2",
                              password="Ctl-Plan-Secret-66"),
               self.hold_open("planned.example", 2913),
               self.hold_open("gone.example", 2912, enabled=False)]
        try:
            cp = self.ctl("plan")
            js = self.ctl("--json", "plan")
            self.assertEqual(self.credential("table.example"), table)
            self.assertIsNone(self.credential("planned.example"))
            self.assertEqual(self.daemon.applies(), applies)
        finally:
            for fd in fds:
                os.close(fd)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        lines = cp.stdout.splitlines()
        self.assertIn("~ table.example  relay localhost:2901 (user 'apikey') "
                      "-> relay localhost:2911 (user 'apikey2'); password "
                      "changed", lines, cp.stdout)
        self.assertTrue(any(line.startswith(
            "+ planned.example  relay localhost:2913") for line in lines),
            cp.stdout)
        self.assertTrue(any(line.startswith(
            "- gone.example  relay localhost:2912") and
            line.endswith("-> default") for line in lines), cp.stdout)
        self.assertIn("+ domains/planned.example/smtp_relay.conf", lines)
        self.assertIn("- domains/gone.example", lines)
        changes = {c["domain"]: c for c in
                   json.loads(js.stdout)["arguments"]["changes"]}
        self.assertEqual(set(changes), {"table.example", "planned.example",
                                        "gone.example"})
        self.assertTrue(changes["table.example"]["password_changed"])
        self.assertEqual(changes["table.example"]["live"]["username"],
                         "apikey")
        self.assertEqual(changes["gone.example"]["after"],
                         {"route": "default"})
        for out in (cp.stdout, js.stdout):
            for secret in ("Ctl-Plan-Secret-66", "Ctl-Secret-55"):
                self.assertNotIn(secret, out)
                self.assertNotIn(h.b64(secret), out)

        # Closed, the files are settings: the daemon applies them.
        self.wait_route("table.example", 2911)
        self.wait_route("planned.example", 2913)
        self.wait_no_relay("gone.example")
        self.save("table.example", 2901, username="apikey",
                  password="Ctl-Secret-55")
        self.panel.remove_domain("alice", "planned.example")
        self.panel.remove_domain("alice", "gone.example")
        self.wait_route("table.example", 2901)
        self.wait_no_relay("planned.example")
        self.daemon.wait_idle()
        cp = self.ctl("plan")
        self.assertIn("No file would change", cp.stdout)

        # A live file removed behind the daemon's back shows as added.
        live = self.output_dir / "domains" / "table.example" / \
            "smtp_relay.conf"
        live.unlink()
        cp = self.ctl("plan")
        self.assertIn("+ table.example  relay localhost:2901", cp.stdout)
        self.assertIn("+ domains/table.example/smtp_relay.conf", cp.stdout)
        self.assertFalse(live.exists())
        self.ctl("reconcile", "--domain", "table.example", "--wait")
        self.assertTrue(live.exists())

    def test_version(self):
        """verifies version names the daemon's version."""
        cp = self.ctl("version")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("havenoro-relayd", cp.stdout)

    def test_bad_command_line_exits_64(self):
        """verifies a usage error is not mistaken for a rejection."""
        self.assertEqual(self.ctl("reconcile", "--bogus").returncode, 64)

    def test_save_hook_script(self):
        """verifies contrib/havenoro-save-hook's statuses 0, 1 and 2."""
        env = {**os.environ, "HAVENORO_RELAYCTL": str(dh.relayctl_binary()),
               "HAVENORO_RELAYD_SOCKET": str(self.daemon.socket)}

        def hook(*args, **extra):
            return subprocess.run([str(SAVE_HOOK), *args], env={**env,
                                   **extra}, capture_output=True, text=True,
                                  timeout=180)

        self.save("hook.example", 2904)
        self.assertEqual(hook("hook.example").returncode, 0)
        self.save("hook.example", 99999)
        cp = hook("hook.example")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("smtp_relay.port", cp.stderr)
        cp = hook("hook.example",
                  HAVENORO_RELAYD_SOCKET=str(self.work / "none.sock"))
        self.assertEqual(cp.returncode, 2)


class RelayTestCommandTest(DaemonTest):
    """The panel's Test button, through the CLI: `havenoro-relayctl test`.

    Settings are read as the panel stored them; the probe's verdict, the
    failed step and the test message's fate come back, never the password.
    """

    PASSWORD = "Test-Button-Secret-9x"

    @classmethod
    def prepare_panel(cls):
        super().prepare_panel()
        cls.relay = h.Relay(cls.work, "relay-test", ca=cls.ca,
                            check_accounts=True)
        cls.addClassCleanup(cls.relay.stop)
        cls.relay.add_account("tester", cls.PASSWORD)
        cls.sink = h.Relay(cls.work, "sink-test", mode="plain",
                           mechanisms="", ca=cls.ca)
        cls.addClassCleanup(cls.sink.stop)
        cls.panel.write_domain("alice", "button.example", {
            "smtp_relay": h.relay_settings(
                cls.relay, username="tester", password=cls.PASSWORD)})
        cls.panel.write_domain("alice", "wrongpw.example", {
            "smtp_relay": h.relay_settings(
                cls.relay, username="tester", password="not-it")})
        cls.panel.write_domain("alice", "nothing.example", {
            "smtp_relay": h.relay_settings(host="localhost",
                                           port=h.free_port())})
        # Passes the probe (which sends no message), then refuses the
        # message for now. It is also the server-wide relay.
        cls.deferring = h.Relay(cls.work, "relay-defers", ca=cls.ca,
                                check_accounts=True,
                                mail_reply="451 4.3.0 Try again later")
        cls.addClassCleanup(cls.deferring.stop)
        cls.deferring.add_account("tester", cls.PASSWORD)
        cls.panel.write_domain("alice", "defers.example", {
            "smtp_relay": h.relay_settings(
                cls.deferring, username="tester", password=cls.PASSWORD)})
        cls.panel.write_server_relay(h.relay_settings(
            cls.deferring, username="tester", password=cls.PASSWORD))
        cls.stalling = cls.StallingRelay()
        cls.addClassCleanup(cls.stalling.stop)
        cls.panel.write_domain("alice", "stalls.example", {
            "smtp_relay": h.relay_settings(
                host="127.0.0.1", port=cls.stalling.port, security="none")})

    class StallingRelay(h.SilentListener):
        """A relay that answers the probe (banner, EHLO, QUIT; no TLS, no
        AUTH) and never answers MAIL FROM, as a relay that hangs mid-
        dialogue: a message Exim hands it stays queued."""

        def __init__(self):
            self.mail_seen = threading.Event()
            super().__init__()

        def accepted(self, conn):
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

        def _serve(self, conn):
            try:
                conn.sendall(b"220 stalls.test ESMTP\r\n")
                for line in conn.makefile("rb"):
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        conn.sendall(b"250 stalls.test\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        break
                    elif verb == b"MAIL":
                        self.mail_seen.set()  # and never an answer
                    else:
                        conn.sendall(b"250 OK\r\n")
            except OSError:
                pass
            conn.close()

        def drop_connections(self):
            """Ends every connection, so whoever waits on one gives up."""
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def stop(self):
            self.drop_connections()
            super().stop()

    def assertNoSecret(self, cp):
        for text in (cp.stdout, cp.stderr):
            self.assertNotIn(self.PASSWORD, text)
            self.assertNotIn(
                base64.b64encode(self.PASSWORD.encode()).decode(), text)

    def remove_from_queue(self, message_id, relay=None):
        """Takes a test message out of Exim's queue once no delivery
        holds it (a stalled one ends when the relay drops it)."""
        if relay is not None:
            relay.drop_connections()
        h.wait_until(lambda: [line for line in self.exim.log_lines()
                              if f"{message_id} ==" in line], WAIT,
                     f"Exim to defer {message_id}")
        self.exim.exim("-Mrm", message_id)

    def test_working_relay_says_works_with_every_step(self):
        """verifies exit 0, the verdict and the steps, as a table and as
        JSON that parses."""
        cp = self.daemon.ctl("test", "button.example")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("verdict", cp.stdout)
        self.assertIn("works", cp.stdout)
        self.assertIn("<redacted>", cp.stdout)
        self.assertNoSecret(cp)
        cp = self.daemon.ctl("--json", "test", "button.example")
        doc = json.loads(cp.stdout)
        steps = [s["name"] for s in doc["arguments"]["probe"]["steps"]]
        self.assertIn("auth", steps)
        self.assertTrue(doc["arguments"]["probe"]["works"])
        self.assertNoSecret(cp)

    def test_refused_password_names_the_auth_step(self):
        """verifies exit 1 and one stderr line naming the failed step."""
        cp = self.daemon.ctl("test", "wrongpw.example")
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertEqual(len(cp.stderr.strip().splitlines()), 1, cp.stderr)
        self.assertIn("auth", cp.stderr)
        self.assertIn("535", cp.stderr)
        self.assertNoSecret(cp)

    def test_nothing_listening_is_said_so(self):
        cp = self.daemon.ctl("test", "nothing.example")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("nothing listening", cp.stderr)
        self.assertNoSecret(cp)

    def test_unknown_domain_is_refused(self):
        cp = self.daemon.ctl("test", "unknown.example")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("not in the panel", cp.stderr)
        self.assertNoSecret(cp)

    def test_to_sends_a_real_message_through_exim(self):
        """verifies --to: the message takes the live route to the relay and
        is reported delivered with its Exim id."""
        self.daemon.wait_idle()
        cp = self.daemon.ctl("--json", "test", "button.example", "--to",
                             "someone@example.net")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        message = json.loads(cp.stdout)["arguments"]["message"]
        self.assertEqual(message["outcome"], "delivered", message)
        self.assertEqual(message["router"], "havenoro_relay")
        self.assertTrue(message["message_id"])
        self.assertNoSecret(cp)

    def test_bad_to_address_is_refused(self):
        cp = self.daemon.ctl("test", "button.example", "--to", "a b@c")
        self.assertEqual(cp.returncode, 1)
        self.assertNoSecret(cp)

    def test_server_wide_relay_is_tested_with_server(self):
        """verifies test --server and its alias --default: the stored
        server-wide relay (not a domain's) is probed, through AUTH."""
        for flag in ("--server", "--default"):
            with self.subTest(flag=flag):
                cp = self.daemon.ctl("--json", "test", flag)
                self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
                args = json.loads(cp.stdout)["arguments"]
                self.assertTrue(args["server"], args)
                self.assertEqual(args["probe"]["relay"],
                                 f"localhost:{self.deferring.port}")
                self.assertEqual(args["probe"]["failed_step"], None)
                self.assertIn("C: AUTH PLAIN <redacted>",
                              args["probe"]["transcript"])
                self.assertNoSecret(cp)

    def test_server_argument_is_required_for_the_server_wide_relay(self):
        """verifies relay-test's arguments: neither domain nor server,
        both, wrong types and timeout_s out of range are bad requests
        that name what is wrong."""
        for args, words in (
                ({}, ("domain", "server")),
                ({"server": False}, ("domain", "server")),
                ({"domain": "button.example", "server": True},
                 ("not both",)),
                ({"server": "yes"}, ("server",)),
                ({"domain": "button.example", "timeout_s": 0},
                 ("timeout_s", "1-120")),
                ({"domain": "button.example", "timeout_s": 121},
                 ("timeout_s",)),
                ({"server": True, "timeout_s": "5"}, ("timeout_s",))):
            with self.subTest(args=args):
                reply = self.daemon.request("relay-test", **args)
                self.assertEqual(reply["result"], 4, reply)
                for word in words:
                    self.assertIn(word, reply["text"])
        reply = self.daemon.request("relay-test", server=True, timeout_s=3)
        self.assertEqual(reply["result"], 0, reply)
        self.assertNotIn(self.PASSWORD, json.dumps(reply))

    def test_to_deferred_is_reported_through_the_cli(self):
        """verifies --to when the relay refuses the message for now:
        exit 1, the message deferred with the relay's answer, its Exim id,
        and the live route it took."""
        self.daemon.wait_idle()
        cp = self.daemon.ctl("--json", "test", "defers.example", "--to",
                             "someone@example.net")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        doc = json.loads(cp.stdout)
        message = doc["arguments"]["message"]
        self.assertTrue(message["message_id"], message)
        self.addCleanup(self.remove_from_queue, message["message_id"])
        self.assertTrue(doc["arguments"]["probe"]["works"], doc)
        self.assertEqual(message["outcome"], "deferred", message)
        self.assertEqual(message["router"], "havenoro_relay", message)
        self.assertIn("451 4.3.0 Try again later", message["response"])
        self.assertIn("deferred", doc["text"])
        self.assertIn("451", doc["text"])
        self.assertNoSecret(cp)

    def test_to_still_queued_when_the_relay_stalls(self):
        """verifies --to with --timeout: a relay that takes the message's
        connection and never answers MAIL FROM keeps it queued; the reply
        says "still queued" with its Exim id once the bound passes."""
        self.daemon.wait_idle()
        started = time.monotonic()
        cp = self.daemon.ctl("--json", "test", "stalls.example", "--to",
                             "someone@example.net", "--timeout", "4")
        took = time.monotonic() - started
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        doc = json.loads(cp.stdout)
        message = doc["arguments"]["message"]
        self.assertTrue(message["message_id"], message)
        self.addCleanup(self.remove_from_queue, message["message_id"],
                        self.stalling)
        self.assertTrue(doc["arguments"]["probe"]["works"], doc)
        self.assertEqual(message["outcome"], "still queued", message)
        self.assertIn("still queued", doc["text"])
        self.assertTrue(self.stalling.mail_seen.is_set(),
                        "Exim never reached MAIL FROM")
        # The bound holds: the probe took little, the message the rest.
        self.assertGreaterEqual(message["took_ms"], 3000)
        self.assertLess(took, 4 + 2)
        self.assertNoSecret(cp)

    def test_relay_test_does_not_wait_for_a_slow_apply(self):
        """verifies the bound end to end: while an apply sits in a slow
        Exim reload (a reload command that sleeps), relay-test answers
        within its bound and before the reload is over."""
        began_mark = self.work / "slow-reload.began"
        ended_mark = self.work / "slow-reload.ended"
        script = self.work / "slow-reload.sh"
        script.write_text("#!/bin/sh\n"
                          f"touch '{began_mark}'\n"
                          "sleep 6\n"
                          f"kill -HUP \"$(cat '{self.exim.pid_file}')\"\n"
                          f"touch '{ended_mark}'\n")
        script.chmod(0o755)
        self.daemon.wait_idle()
        applies = self.daemon.applies()
        self.addCleanup(self.put_back_configuration, applies)
        # A setting rendered into transports.conf: a new generation, so
        # the apply after SIGHUP reloads Exim.
        self.daemon.write_config({**self.daemon.config,
                                  "connect_timeout_s": 11,
                                  "exim_reload_command": [str(script)]})
        self.daemon.signal(signal.SIGHUP)
        h.wait_until(began_mark.exists, WAIT, "the slow reload to begin")
        started = time.monotonic()
        cp = self.daemon.ctl("--json", "test", "button.example",
                             "--timeout", "5")
        took = time.monotonic() - started
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertFalse(ended_mark.exists(),
                         f"the answer came after the reload ({took:.1f} s)")
        self.assertLess(took, 5)
        self.assertNoSecret(cp)

    def put_back_configuration(self, applies):
        """Waits for the slow apply, then applies the class's own
        configuration again."""
        h.wait_until(lambda: self.daemon.applies() > applies, WAIT,
                     "the apply with the slow reload to end")
        self.daemon.write_config(self.daemon.config)
        self.daemon.signal(signal.SIGHUP)
        h.wait_until(lambda: self.daemon.applies() > applies + 1, WAIT,
                     "the apply with the class's configuration")


class RollbackTest(DaemonTest):
    """`havenoro-relayctl rollback`: the previous generation goes live and
    stays pinned until a reconcile releases it."""

    def test_rollback_then_release(self):
        first = os.readlink(self.output_dir / "current")
        # A daemon setting that shapes the snippets makes a new generation.
        self.daemon.write_config(self.config(connect_timeout_s=9))
        self.daemon.signal(signal.SIGHUP)
        h.wait_until(lambda: os.readlink(self.output_dir / "current") !=
                     first, WAIT, "a new generation")
        self.daemon.wait_idle()
        cp = self.daemon.ctl("rollback")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(os.readlink(self.output_dir / "current"), first)
        self.assertIn("pinned", cp.stdout)
        cp = self.daemon.ctl("reconcile", "--release-pin", "--wait")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertNotEqual(os.readlink(self.output_dir / "current"), first)
        cp = self.daemon.ctl("rollback", "999")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("not kept", cp.stderr)


class PeriodicResyncTest(DaemonTest):
    """The interval resync, the safety net for what inotify never reports."""

    relayd_overrides = {"resync_interval_s": 2}

    def test_interval_resync_applies_what_no_event_reported(self):
        """verifies a change no inotify event reports goes live with the
        next interval resync, as a full apply."""
        self.save("missed.example", 2921)
        self.wait_route("missed.example", 2921)
        self.daemon.wait_idle()
        mark = len(self.daemon.log_text().splitlines())
        data = {"domain": "missed.example", "suspended": False,
                "smtp_relay": h.relay_settings(host="localhost", port=2922)}
        # Written in place and held open: the watcher acts on a file once
        # its writer closes it (IN_CLOSE_WRITE), so no event reports this.
        path = self.panel.domain_file("alice", "missed.example")
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        def since_mark():
            return self.daemon.log_text().splitlines()[mark:]
        try:
            os.write(fd, json.dumps(data).encode())
            self.wait_route("missed.example", 2922)
            # The files go live before the apply is logged.
            h.wait_until(lambda: any(" apply.done " in f"{line} "
                                     for line in since_mark()),
                         WAIT, "the resync's apply.done")
            log = since_mark()
        finally:
            os.close(fd)
        self.assertTrue(any("resync.start reason=interval" in line
                            for line in log), "\n".join(log))
        applied = [line for line in log if " apply.done " in f"{line} "]
        self.assertTrue(applied, "\n".join(log))
        # full=no would mean an event reported it after all, and this test
        # no longer shows the resync.
        self.assertTrue(all("full=yes" in line for line in applied),
                        "\n".join(applied))


class PanelRootComesBackTest(DaemonTest):
    """The panel root goes and comes back (a restore, a remount, a panel
    upgrade by rename): the daemon watches the tree again on its own, and
    applies what changed meanwhile."""

    def setUp(self):
        self.away = self.work / "panel.away"
        self.addCleanup(self.put_back, self.away)
        self.mark = len(self.daemon.log_text().splitlines())

    def put_back(self, source, copy=False):
        """Puts a root back for the next test, whatever failed."""
        if self.panel.root.exists() or not source.exists():
            return
        if copy:
            shutil.copytree(source, self.panel.root, symlinks=True)
        else:
            os.rename(source, self.panel.root)

    def events(self, name):
        """This test's log lines of the event name."""
        lines = self.daemon.log_text().splitlines()[self.mark:]
        return [line for line in lines if f" {name} " in f" {line} "]

    def wait_event(self, name):
        h.wait_until(lambda: self.events(name), WAIT,
                     f"{name} in the daemon's log")

    def start_user(self, user, domain, port):
        self.panel.write_user(user)
        self.save(domain, port, user=user)
        self.wait_route(domain, port)
        self.daemon.wait_idle()
        self.mark = len(self.daemon.log_text().splitlines())

    def assert_watched(self, user, domain, port):
        """A save by the panel's rename and a suspension in user.json (no
        save hook covers that) go live with no reconcile sent."""
        self.save(f"later.{domain}", port, user=user)
        self.wait_route(f"later.{domain}", port)
        self.panel.write_user(user, suspended=True)
        marker = self.output_dir / "suspended" / domain
        h.wait_until(marker.exists, WAIT, f"{domain}'s suspended marker")
        self.wait_no_relay(domain)

    def test_a_root_renamed_away_and_back_later(self):
        """verifies a root renamed away is said lost once, applies nothing
        while away, and once back is watched again, with what was saved
        meanwhile applied."""
        self.start_user("mover", "mover.example", 2941)
        os.rename(self.panel.root, self.away)
        self.wait_event("watch.root_lost")
        # Saved while the tree was elsewhere: no event reports it.
        h.PanelTree(self.away).write_domain("mover", "meanwhile.example", {
            "smtp_relay": h.relay_settings(host="localhost", port=2942)})
        os.rename(self.away, self.panel.root)
        self.wait_event("watch.root_back")
        self.wait_route("meanwhile.example", 2942)
        self.assertEqual(self.route_of("mover.example"), "localhost:2941")
        self.assert_watched("mover", "mover.example", 2943)
        self.assertEqual(self.events("apply.failed"), [])
        self.assertEqual(len(self.events("watch.root_lost")), 1)
        self.assertEqual(len(self.events("watch.root_back")), 1)

    def test_b_root_removed_and_made_again_from_a_copy(self):
        """verifies a root removed and restored from a copy is watched
        again and its relays are live again."""
        self.start_user("restored", "restored.example", 2951)
        copy = self.work / "panel.copy"
        shutil.copytree(self.panel.root, copy, symlinks=True)
        self.addCleanup(shutil.rmtree, copy, ignore_errors=True)
        self.addCleanup(self.put_back, copy, copy=True)
        shutil.rmtree(self.panel.root)
        self.wait_event("watch.root_lost")
        shutil.copytree(copy, self.panel.root, symlinks=True)
        self.wait_event("watch.root_back")
        self.wait_route("restored.example", 2951)
        self.assert_watched("restored", "restored.example", 2952)

    def test_c_root_renamed_there_and_back_at_once(self):
        """verifies `mv panel panel.moved; mv panel.moved panel` leaves
        the tree watched."""
        self.start_user("quick", "quick.example", 2961)
        # As an admin types it: the daemon wakes up between the two.
        subprocess.run(["/bin/sh", "-c", 'mv "$1" "$2"; mv "$2" "$1"', "sh",
                        str(self.panel.root), str(self.away)],
                       check=True, timeout=WAIT)
        self.assertTrue(self.panel.root.is_dir())
        self.assert_watched("quick", "quick.example", 2962)
        self.assertEqual(self.events("apply.failed"), [])

    def test_d_reconcile_finds_the_root_at_once(self):
        """verifies a save hook's reconcile right after the root is back
        applies the save, and the tree is watched again."""
        self.start_user("hook", "hook.example", 2965)
        os.rename(self.panel.root, self.away)
        self.wait_event("watch.root_lost")
        os.rename(self.away, self.panel.root)
        self.save("hook.example", 2966, user="hook")
        cp = self.daemon.ctl("reconcile", "--domain", "hook.example", "--wait")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(self.route_of("hook.example"), "localhost:2966")
        self.assertTrue(self.events("watch.root_back"))
        self.assert_watched("hook", "hook.example", 2967)


class PanelRootComesBackEmptyTest(DaemonTest):
    """A root that comes back empty (a file system not mounted yet) removes
    no relay; the real tree back in its place is watched and applied."""

    relayd_overrides = {"mass_removal_min_domains": 2}

    def test_empty_root_holds_removals_back_until_the_tree_is_back(self):
        """verifies an empty tree in the root's place holds back the removal
        of every relay, and the real tree renamed back ends the hold."""
        self.panel.write_user("many")
        ports = {f"d{i}.many.example": 2971 + i for i in range(4)}
        for domain, port in ports.items():
            self.save(domain, port, user="many")
        for domain, port in ports.items():
            self.wait_route(domain, port)
        self.daemon.wait_idle()
        mark = len(self.daemon.log_text().splitlines())

        def events(name):
            lines = self.daemon.log_text().splitlines()[mark:]
            return [line for line in lines if f" {name} " in f" {line} "]

        real = self.work / "panel.real"
        empty = self.work / "panel.empty"
        os.rename(self.panel.root, real)
        self.addCleanup(lambda: real.exists() and not self.panel.root.exists()
                        and os.rename(real, self.panel.root))
        h.wait_until(lambda: events("watch.root_lost"), WAIT, "root_lost")
        h.PanelTree(self.panel.root)  # conf/ and data/users/, nothing else
        h.wait_until(lambda: events("apply.held_back"), WAIT,
                     "the removals to be held back")
        for domain, port in ports.items():
            self.assertEqual(self.route_of(domain), f"localhost:{port}")

        os.rename(self.panel.root, empty)
        os.rename(real, self.panel.root)
        held = self.output_dir / "held-removals"
        h.wait_until(lambda: not held.exists(), WAIT,
                     "a full resync of the real tree to end the hold")
        self.save("d0.many.example", 2979, user="many")
        self.wait_route("d0.many.example", 2979)
        for domain, port in list(ports.items())[1:]:
            self.assertEqual(self.route_of(domain), f"localhost:{port}")


class ConfigReloadTest(DaemonTest):
    """SIGHUP with a configuration that cannot work: refused by key, the
    old configuration stays, and status-get and the table say so."""

    def reload_with(self, **changes):
        self.daemon.write_config({**self.daemon.config, **changes})
        self.daemon.signal(signal.SIGHUP)

    def wait_reload(self, result, what):
        def seen():
            reload = self.daemon.status().get("config")
            return (reload and reload["result"] == result and
                    what in (reload["error"] or what) and reload)
        return h.wait_until(seen, WAIT, f"a reload {result} ({what})")

    def test_bad_values_are_refused_and_shown_in_status(self):
        """verifies an unknown exim_group and a probe address that is not
        host:port are refused on SIGHUP (config.reload_failed naming the
        key, never config.reload), shown in status-get's `config`, its
        text and the status table, while applies go on with the old
        configuration; a good file then is reloaded."""
        self.addCleanup(self.daemon.write_config, self.daemon.config)
        for key, value in (("exim_group", "havenoro-no-such-group"),
                           ("exim_probe_address", "garbage")):
            with self.subTest(key=key):
                self.reload_with(**{key: value})
                reload = self.wait_reload("refused", f"'{key}'")
                self.assertIn(value, reload["error"])
                failed = self.daemon.log_events("config.reload_failed")
                self.assertTrue(any(key in line for line in failed), failed)
                self.assertEqual(self.daemon.log_events("config.reload"), [])
                status = self.daemon.request("status-get")
                self.assertIn("configuration reload refused", status["text"])
                cp = self.daemon.ctl("status")
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertIn("reload REFUSED", cp.stdout)
                self.assertIn(f"'{key}'", cp.stdout)
                # The old configuration still applies (its group exists).
                domain = f"{key.replace('_', '-')}.example"
                self.save(domain, 2931)
                self.wait_route(domain, 2931)
                self.daemon.wait_idle()
                self.assertEqual(
                    self.daemon.status()["last_apply"]["result"], "applied")
        self.reload_with(resync_interval_s=1800)
        self.wait_reload("reloaded", "")
        self.assertTrue(self.daemon.log_events("config.reload"))
        status = self.daemon.request("status-get")
        self.assertNotIn("refused", status["text"])
        self.assertIn("reloaded at", self.daemon.ctl("status").stdout)


class RollbackStatusTest(DaemonTest):
    """A rollback's pin shows in status and plan; a refused rollback is not
    an apply; a full reconcile says what it did before what it rejected."""

    def live(self):
        return int(os.readlink(self.output_dir / "current").rsplit("/")[-1])

    def test_pin_refused_rollback_and_release_with_a_rejection(self):
        """verifies, after a rollback: status-get `pinned` and the table's
        Pinned row, plan saying the pin holds the new snippets; a refused
        rollback leaving the last apply as it was; then `reconcile
        --release-pin --wait` with one domain rejected: exit 1, one line
        saying the pin was released and the new generation is live and
        Exim reloaded, then the rejection; `--confirm-removals` alike."""
        first = self.live()
        self.addCleanup(self.daemon.write_config, self.daemon.config)
        # A daemon setting that shapes the snippets makes a new generation.
        self.daemon.write_config(self.config(connect_timeout_s=8))
        self.daemon.signal(signal.SIGHUP)
        h.wait_until(lambda: self.live() != first, WAIT, "a new generation")
        self.daemon.wait_idle()
        cp = self.daemon.ctl("rollback")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(self.live(), first)

        status = self.daemon.status()
        self.assertEqual(status["pinned"], {"generation": first})
        table = self.daemon.ctl("status").stdout
        self.assertIn(f"generation {first} by a rollback; `havenoro-relayctl "
                      "reconcile --release-pin --wait` renders the snippets "
                      "again", table)
        self.assertIn("pinned by a rollback",
                      self.daemon.request("status-get")["text"])
        plan = self.daemon.ctl("plan")
        self.assertEqual(plan.returncode, 0, plan.stderr)
        self.assertIn(f"generation {first} is pinned by a rollback",
                      plan.stdout)
        self.assertIn("--release-pin", plan.stdout)

        before = status["last_apply"]
        cp = self.daemon.ctl("rollback", "999")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("not kept", cp.stderr)
        after = self.daemon.request("status-get")
        self.assertEqual(after["arguments"]["last_apply"], before)
        self.assertNotIn("failed", after["text"])
        self.assertNotIn("Last apply         failed",
                         self.daemon.ctl("status").stdout)

        self.save("broken.example", 0)
        cp = self.daemon.ctl("reconcile", "--release-pin", "--wait")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertEqual(cp.stdout, "")
        self.assertEqual(len(cp.stderr.splitlines()), 1, cp.stderr)
        live = self.live()
        self.assertNotEqual(live, first)
        self.assertTrue(cp.stderr.startswith(
            f"pin released; applied: generation {live} live, Exim "
            "reloaded; rejected: domain 'broken.example'"), cp.stderr)
        self.assertIn("smtp_relay.port", cp.stderr)
        self.assertIsNone(self.daemon.status()["pinned"])
        self.assertNotIn("Pinned", self.daemon.ctl("status").stdout)

        cp = self.daemon.ctl("reconcile", "--confirm-removals", "--wait")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertTrue(cp.stderr.startswith(
            "removals confirmed: 0 relay domains removed; nothing to "
            f"change: generation {live} live; rejected: domain "
            "'broken.example'"), cp.stderr)


if __name__ == "__main__":
    unittest.main()
