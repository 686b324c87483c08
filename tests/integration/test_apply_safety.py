#!/usr/bin/python3
"""Apply safety: what Exim reads stays whole whatever happens to an apply.

The real havenoro-relayd runs against a private Exim daemon and real relays
(tests/support/harness.py) and is killed with SIGKILL at random moments,
runs twice with nothing changed, meets symlinks planted in its output
directory, a broken candidate, and an Exim that dies when it is reloaded
(tests/support/safety_harness.py). Each test checks what a new Exim process
would read, the relays' view of the credentials, and the Exim daemon's pid
and main log.

Run: /usr/bin/python3 tests/integration/test_apply_safety.py [-v] [-k F16]
HAVENORO_RELAYD names the binary (default build/src/daemon/...);
HAVENORO_KILL_SEED replays the kill test with another seed;
HAVENORO_KEEP_WORKDIR=1 keeps the temporary directories.
"""

import fcntl
import json
import os
import random
import re
import shlex
import signal
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
import safety_harness as sh  # noqa: E402

RCPT = "someone@example.net"


class SafetyCase(unittest.TestCase):
    """Starts a CA, an MX sink, a panel tree and a private Exim daemon for
    a test class; every part registers its own class cleanup."""

    @classmethod
    def start_parts(cls):
        cls.binary = h.relayd_binary()
        cls.work = h.make_workdir(f"havenoro-{cls.__name__}-")
        if not os.environ.get("HAVENORO_KEEP_WORKDIR"):
            cls.addClassCleanup(h.remove_tree, cls.work)
        cls.counter = 0
        cls.ca = h.TestCA(cls.work / "ca")
        cls.sink = cls.start_relay("mx-sink", mode="plain", mechanisms="",
                                   check_accounts=False)
        cls.panel = h.PanelTree(cls.work / "panel")
        cls.output_dir = cls.work / "relay-out"
        cls.exim = h.EximInstance(cls.work, cls.output_dir, cls.sink.port)
        cls.addClassCleanup(cls.exim.stop)
        cls.exim.start()

    @classmethod
    def start_relay(cls, name, check_accounts=True, **kwargs):
        kwargs.setdefault("ca", cls.ca)
        relay = h.Relay(cls.work, name, check_accounts=check_accounts,
                        **kwargs)
        cls.addClassCleanup(relay.stop)
        return relay

    @classmethod
    def config(cls, **overrides):
        return h.relayd_config(cls.panel, cls.exim, cls.ca, **overrides)

    @classmethod
    def apply(cls, **overrides):
        return h.run_relayd(cls.binary, cls.config(**overrides), cls.work)

    @classmethod
    def apply_ok(cls, **overrides):
        cp = cls.apply(**overrides)
        if cp.returncode != 0:
            raise AssertionError(f"havenoro-relayd --once exited "
                                 f"{cp.returncode}:\n{cp.stdout}{cp.stderr}")
        return cp

    @classmethod
    def send(cls, sender):
        """Sends one message; returns (token, msgid) to find it by."""
        cls.counter += 1
        token = f"havenoro-safety-{cls.__name__}-{cls.counter:03d}"
        msgid = cls.exim.send(sender, RCPT, f"{token} from <{sender}>")
        return token, msgid

    def assertArrivesAs(self, sender, relay, username, password):
        """A message from sender reaches relay with these credentials."""
        token, msgid = self.send(sender)
        self.exim.wait_delivery(msgid)
        got = h.wait_until(lambda: relay.messages_with(token), 10,
                           f"{token} at {relay.name}: "
                           f"{self.exim.message_log(msgid)}")
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["username"], username.encode())
        self.assertEqual(got[0]["password"], password.encode())
        return got[0]

    def last_line(self, cp):
        lines = cp.stdout.strip().splitlines()
        self.assertTrue(lines, f"no stdout; stderr:\n{cp.stderr}")
        return lines[-1]

    def current(self):
        return os.readlink(self.output_dir / "current")

    def generations(self):
        return sorted(os.listdir(self.output_dir / "generations"))

    def assertLiveConfigPasses(self):
        """`exim -C <config> -bV`, no -D: what a new Exim process reads."""
        cp = self.exim.exim("-bV")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def live_files(self):
        """domain -> (route, username, password) of each live file."""
        out = {}
        domains = self.output_dir / "domains"
        for name in os.listdir(domains):
            if name.startswith("."):
                continue
            conf = domains / name / "smtp_relay.conf"
            if conf.is_file():
                f = sh.parse_credential(conf.read_text())
                out[name] = (f.get("route"), sh.decoded(f, "username"),
                             sh.decoded(f, "password"))
        return out


class KillDuringApplyTest(SafetyCase):
    """SIGKILL at random moments of applies over ~300 domains.

    Between runs the panel changes passwords, moves domains from one relay
    to the other (a port change), turns relays on and off, suspends and
    changes the server-wide relay, and now and then a daemon setting that
    is rendered into the snippets (a new generation and an Exim reload).
    """

    maxDiff = None
    DOMAINS = 300
    KILLS = 12
    MAX_ATTEMPTS = 40
    # A bound for a loaded machine (ctest -j2 beside other Exim tests),
    # where one kill and its converging runs take seconds.
    BUDGET_S = 150

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.relay_a = cls.start_relay("relay-a", check_accounts=False)
        cls.relay_b = cls.start_relay("relay-b", check_accounts=False)
        cls.relays = {cls.relay_a.port: cls.relay_a,
                      cls.relay_b.port: cls.relay_b}
        for u in range(10):
            cls.panel.write_user(f"user{u}")
        # domain -> (port, username, password), or None: no relay.
        cls.want = {}
        cls.suspended = set()
        for i in range(cls.DOMAINS):
            domain = f"d{i:03d}.example"
            relay = cls.relay_a if i % 2 else cls.relay_b
            cls.want[domain] = (None if i % 10 == 9 else
                                (relay.port, f"user-{i}", f"Pw-{i}-0"))
            if i % 25 == 3:
                cls.suspended.add(domain)
            cls.save(domain)
        cls.server = (cls.relay_a.port, "server-user", "Server-Pw-0")
        cls.save_server()
        cls.connect_timeout = 15
        cls.apply_ok(connect_timeout_s=cls.connect_timeout)

    @classmethod
    def save(cls, domain):
        i = int(domain[1:4])
        settings = {"suspended": domain in cls.suspended}
        if cls.want[domain]:
            port, user, password = cls.want[domain]
            settings["smtp_relay"] = h.relay_settings(
                port=port, username=user, password=password)
        cls.panel.write_domain(f"user{i % 10}", domain, settings)

    @classmethod
    def save_server(cls):
        port, user, password = cls.server
        cls.panel.write_server_relay(h.relay_settings(
            port=port, username=user, password=password))

    def change_panel(self, rng, n):
        """One save round of the panel: a few domains, sometimes more."""
        relayed = sorted(d for d, w in self.want.items() if w)
        for domain in rng.sample(relayed, 4):
            port, user, _ = self.want[domain]
            self.want[domain] = (port, user, f"Pw-{domain}-{n}")
            self.save(domain)
        for domain in rng.sample(relayed, 2):
            port, user, password = self.want[domain]
            other = next(p for p in self.relays if p != port)
            self.want[domain] = (other, user, password)
            self.save(domain)
        if n % 3 == 0:
            domain = rng.choice(sorted(self.want))
            self.want[domain] = (None if self.want[domain] else
                                 (self.relay_a.port, f"on-{n}", f"On-{n}"))
            self.save(domain)
        if n % 4 == 1:
            domain = rng.choice(sorted(self.want))
            self.suspended.symmetric_difference_update({domain})
            self.save(domain)
        if n % 5 == 2:
            type(self).server = (self.server[0], "server-user",
                                 f"Server-Pw-{n}")
            self.save_server()
        if n % 3 == 1:
            type(self).connect_timeout = 15 + n % 4

    def expected_files(self):
        """domain -> (route, username, password) as the panel says now."""
        return {d: (f"localhost:{w[0]}", w[1], w[2])
                for d, w in self.want.items()
                if w and d not in self.suspended}

    def assertWholeAfterKill(self, n, before, after):
        """Exim's view after a kill: every live file whole, and each
        domain's credentials either those of before or of after."""
        where = f"after kill {n}"
        cp = self.exim.exim("-bV")
        self.assertEqual(cp.returncode, 0, f"{where}: exim -bV on the live "
                         f"configuration failed:\n{cp.stdout}{cp.stderr}")
        self.assertEqual(sh.live_problems(self.output_dir), [], where)
        live = self.live_files()
        for domain, files in live.items():
            self.assertIn(files, [before.get(domain), after.get(domain)],
                          f"{where}: {domain} holds a mix of settings")
        lost = sorted(set(before) & set(after) - set(live))
        self.assertEqual(lost, [], f"{where}: relay domains without a file")

    def assertConverged(self, n, config_path):
        cp = subprocess.run([str(self.binary), "--config",
                             str(config_path), "--once"],
                            capture_output=True, text=True, timeout=120)
        where = f"after kill {n}, normal run: {cp.stdout}{cp.stderr}"
        self.assertEqual(cp.returncode, 0, where)
        self.assertEqual(self.live_files(), self.expected_files(), where)
        suspended = sorted(os.listdir(self.output_dir / "suspended"))
        self.assertEqual(suspended, sorted(self.suspended), where)
        default = sh.parse_credential(
            (self.output_dir / "default" / "smtp_relay.conf").read_text())
        self.assertEqual((default["route"], sh.decoded(default, "password")),
                         (f"localhost:{self.server[0]}", self.server[2]),
                         where)
        again = subprocess.run([str(self.binary), "--config",
                                str(config_path), "--once"],
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertTrue(self.last_line(again).startswith("apply.unchanged"),
                        f"{where}: second run: {again.stdout}")
        return sh.dot_entries(self.output_dir)

    def calibrate(self, rng):
        """Duration of an uninterrupted apply of one save round with a
        snippet change: the kills are spread over all of it."""
        self.change_panel(rng, 1)
        started = time.monotonic()
        self.apply_ok(connect_timeout_s=self.connect_timeout)
        return time.monotonic() - started

    def test_sigkill_at_random_moments_leaves_exim_a_whole_configuration(self):
        """verifies that after each SIGKILL of an apply, `exim -bV` passes
        on the live configuration, no live file is partial or mixed, and a
        normal run converges on the panel's settings with no leftovers."""
        seed = int(os.environ.get("HAVENORO_KILL_SEED", "16021"))
        rng = random.Random(seed)
        # Reading the panel and starting the checks takes the first ~100
        # ms; the writes, the switch of `current` and the reload come
        # later. Delays spread over a whole apply reach all of them.
        took = self.calibrate(rng)
        # Up to nine tenths of an uninterrupted apply, so that most kills
        # land inside one (a killed run is a little slower to start).
        max_delay = max(0.150, took * 0.9)
        print(f"\nkill seed {seed}; an uninterrupted apply took "
              f"{took * 1000:.0f} ms; kill delays 0-{max_delay * 1000:.0f} ms",
              file=sys.stderr)
        started = time.monotonic()
        kills, finished, leftovers, not_removed = 0, 0, set(), {}
        spent = [0.0, 0.0, 0.0]
        for n in range(2, 2 + self.MAX_ATTEMPTS):
            if kills >= self.KILLS or \
                    time.monotonic() - started > self.BUDGET_S:
                break
            before = self.expected_files()
            self.change_panel(rng, n)
            path = sh.write_config(
                self.config(connect_timeout_s=self.connect_timeout),
                self.work / f"kill-{n}.json")
            delay = rng.uniform(0, max_delay)
            t0 = time.monotonic()
            status = sh.run_killed(self.binary, path, delay)
            if status is None:
                kills += 1
            else:
                finished += 1
                # One slow calibration (a loaded machine) must not spread
                # the kills past the end of every later apply.
                max_delay = max(0.1, max_delay * 0.8)
            t1 = time.monotonic()
            leftovers.update(sh.dot_entries(self.output_dir))
            self.assertWholeAfterKill(n, before, self.expected_files())
            t2 = time.monotonic()
            for entry in self.assertConverged(n, path):
                not_removed.setdefault(entry, f"left by kill {n} (delay "
                                       f"{delay * 1000:.0f} ms)")
            spent = [a + b for a, b in zip(spent, (t1 - t0, t2 - t1,
                                                   time.monotonic() - t2))]
        print(f"{kills} runs killed, {finished} finished before the kill, "
              f"in {time.monotonic() - started:.1f} s (killed runs, checks, "
              f"converging runs: {', '.join(f'{x:.1f}' for x in spent)} s); "
              "leftovers seen: "
              f"{sorted(leftovers)}; kept generations missing files: "
              f"{sh.incomplete_generations(self.output_dir)}",
              file=sys.stderr)
        self.assertGreaterEqual(kills, 10, "too few runs were interrupted")
        self.assertEqual(self.exim.panics(), [])
        domain = next(d for d in sorted(self.expected_files()))
        route, user, password = self.expected_files()[domain]
        relay = self.relays[int(route.rsplit(":", 1)[1])]
        self.assertArrivesAs(f"x@{domain}", relay, user, password)
        # Last, so that every kill above was checked first: dot-named
        # leftovers are invisible to Exim, but a full apply removes them.
        self.assertEqual(not_removed, {}, "leftovers that a converging "
                         "full apply and an unchanged one did not remove")


class ApplySafetyTest(SafetyCase):
    """Data-only changes, idle runs, planted symlinks, a broken candidate.

    Each test starts from a converged apply and leaves one behind.
    """

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.relay_a = cls.start_relay("relay-a")
        cls.relay_b = cls.start_relay("relay-b")
        cls.relay_default = cls.start_relay("relay-default")
        cls.panel.write_user("alice")
        cls.saved = {}
        cls.save("pw.example", cls.relay_a, "pw-user", "Pw-Secret-0Aa")
        cls.save("port.example", cls.relay_a, "port-user", "Port-Secret-0Bb")
        cls.save("other.example", cls.relay_b, "other-user",
                 "Other-Secret-0Cc")
        cls.save_server("Server-Secret-0Dd")
        cls.apply_ok()

    @classmethod
    def save(cls, domain, relay, user, password):
        """Saves a domain's relay, and lets that relay accept it."""
        relay.add_account(user, password)
        cls.saved[domain] = (relay, user, password)
        cls.panel.write_domain("alice", domain, {"smtp_relay":
                               h.relay_settings(relay, username=user,
                                                password=password)})

    @classmethod
    def save_server(cls, password):
        cls.relay_default.add_account("server-user", password)
        cls.panel.write_server_relay(h.relay_settings(
            cls.relay_default, username="server-user", password=password))
        cls.server_password = password

    def exim_state(self):
        return self.exim.daemon_pid(), self.exim.daemon_starts()

    def test_F10_data_only_change_needs_no_reload_and_no_new_generation(self):
        """verifies a password and a port change go live as lookup data:
        the Exim daemon keeps its pid and logs no restart, `current` and
        the generations stay, and the next message uses the new values."""
        self.apply_ok()
        current, gens, state = self.current(), self.generations(), \
            self.exim_state()
        self.save("pw.example", self.relay_a, "pw-user", "Pw-Secret-1New")
        self.save("port.example", self.relay_b, "port-user",
                  "Port-Secret-0Bb")
        cp = self.apply_ok()
        fields = dict(re.findall(r"(\w+)=(\S+)", self.last_line(cp)))
        self.assertEqual((fields.get("written"), fields.get("reloaded")),
                         ("2", "no"), cp.stdout)
        self.assertEqual(self.current(), current)
        self.assertEqual(self.generations(), gens)
        time.sleep(0.5)  # a reload would have logged its start by now
        self.assertEqual(self.exim_state(), state, "Exim was reloaded")
        self.assertArrivesAs("a@pw.example", self.relay_a, "pw-user",
                             "Pw-Secret-1New")
        self.assertArrivesAs("a@port.example", self.relay_b, "port-user",
                             "Port-Secret-0Bb")
        self.assertEqual(self.exim_state(), state)

    def test_noop_apply_writes_nothing_and_reloads_nothing(self):
        """verifies a second run with nothing changed: apply.unchanged,
        every entry under output_dir keeps its inode and mtime (and bytes),
        Exim keeps its pid and logs no restart."""
        self.apply_ok()
        inventory = sh.file_inventory(self.output_dir)
        snapshot = h.snapshot(self.output_dir)
        state = self.exim_state()
        cp = self.apply_ok()
        self.assertTrue(self.last_line(cp).startswith("apply.unchanged"),
                        cp.stdout)
        self.assertGreaterEqual(len(inventory), 10, inventory)
        self.assertEqual(sh.changed_keys(inventory,
                                         sh.file_inventory(self.output_dir)),
                         [], f"of {len(inventory)} entries")
        self.assertEqual(sh.changed_keys(snapshot,
                                         h.snapshot(self.output_dir)), [])
        time.sleep(0.5)
        self.assertEqual(self.exim_state(), state, "Exim was reloaded")

    def test_full_apply_removes_leftovers_of_an_interrupted_apply(self):
        """verifies that what a killed apply leaves (named as the daemon
        names its temporaries, at every level it writes them) is removed by
        the next full apply, while the live files stay as they were."""
        self.apply_ok()
        out, current = self.output_dir, self.current()
        planted = {
            ".current.99999.1.tmp": "link",
            ".check/domains/pw.example/smtp_relay.conf": "file",
            ".candidate/domains/pw.example/smtp_relay.conf": "file",
            ".candidate/suspended/late.example": "file",
            "domains/.new-late.example/smtp_relay.conf": "file",
            "domains/.old-gone.example/smtp_relay.conf": "file",
            "domains/pw.example/.smtp_relay.conf.99999.2.tmp": "file",
            "default/.smtp_relay.conf.99999.3.tmp": "file",
            "suspended/.late.example.99999.4.tmp": "file",
            f"{current}/.routers.conf.99999.5.tmp": "file",
        }
        for rel, kind in planted.items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "link":
                os.symlink(current, path)
            else:
                path.write_text("route: localhost:1\n")
        self.addCleanup(sh.remove_dot_entries, out)
        view = sh.live_view(out, current, dot_entries=False)
        cp = self.apply_ok()
        self.assertEqual(sh.changed_keys(
            view, sh.live_view(out, current, dot_entries=False)), [],
            cp.stdout)
        self.assertEqual(sh.dot_entries(out), [],
                         f"leftovers kept by a full apply: {cp.stdout}")

    def plant_domain_symlink(self, domain, outside):
        link = self.output_dir / "domains" / domain
        h.remove_tree(link)
        os.symlink(outside, link)

        def restore():
            if link.is_symlink():
                link.unlink()
            self.apply_ok()
        self.addCleanup(restore)
        return link

    def test_symlinked_domain_directory_is_reported_and_not_followed(self):
        """verifies domains/<d> replaced by a symlink to a directory outside:
        exit 1, an error naming that path, nothing written outside."""
        self.apply_ok()
        outside = self.work / "outside-dir"
        outside.mkdir()
        (outside / "keep").write_text("not the daemon's\n")
        before = h.snapshot(outside)
        link = self.plant_domain_symlink("pw.example", outside)
        self.addCleanup(self.save, "pw.example", *self.saved["pw.example"])
        self.save("pw.example", self.relay_a, "pw-user", "Pw-Secret-2Link")
        cp = self.apply()
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn(str(link), cp.stderr)
        self.assertEqual(sh.changed_keys(before, h.snapshot(outside)), [],
                         "the daemon wrote through the symlink")
        self.assertEqual(list(outside.iterdir()), [outside / "keep"])

    def test_symlinked_default_credential_file_is_replaced_not_followed(self):
        """verifies default/smtp_relay.conf planted as a symlink to a victim
        file outside: the victim keeps its bytes and mode, and the
        credential file is a regular file with the server-wide relay."""
        self.apply_ok()
        victim = self.work / "victim.txt"
        victim.write_text("victim: keep me\n")
        victim.chmod(0o600)
        victim_before = (victim.read_bytes(), victim.stat().st_mode,
                         victim.stat().st_ino)
        conf = self.output_dir / "default" / "smtp_relay.conf"
        conf.unlink()
        os.symlink(victim, conf)
        self.addCleanup(self.save_server, self.server_password)
        self.save_server("Server-Secret-3Link")
        cp = self.apply()
        self.assertEqual((victim.read_bytes(), victim.stat().st_mode,
                          victim.stat().st_ino), victim_before,
                         cp.stdout + cp.stderr)
        st = conf.lstat()
        self.assertTrue(stat.S_ISREG(st.st_mode),
                        f"still {stat.filemode(st.st_mode)}: "
                        f"{cp.stdout}{cp.stderr}")
        fields = sh.parse_credential(conf.read_text())
        self.assertEqual(sh.decoded(fields, "password"), "Server-Secret-3Link")
        self.assertArrivesAs("root@mail.havenoro.test", self.relay_default,
                             "server-user", "Server-Secret-3Link")

    def test_F06_unknown_router_option_leaves_live_generation_alone(self):
        """verifies `no_such_router_option = 1` in routers.conf: exit 1,
        Exim's error with the option and the line it is on, the live
        generation and data as they were, Exim not signalled."""
        self.apply_ok()
        templates = sh.copy_templates(self.work, "F06-router")
        path = templates / "routers.conf.mustache"
        anchor = "havenoro_relay:\n  driver = manualroute\n"
        text = path.read_text()
        self.assertIn(anchor, text)
        path.write_text(text.replace(anchor,
                                     anchor + "  no_such_router_option = 1\n",
                                     1))
        live_routers = (self.output_dir / "current" / "routers.conf") \
            .read_text().splitlines()
        expected_line = live_routers.index("  driver = manualroute") + 2
        self.assertEqual(live_routers[expected_line - 3], "havenoro_relay:")
        current, gens = self.current(), self.generations()
        view = sh.live_view(self.output_dir, current)
        state = self.exim_state()
        live = self.saved["pw.example"]
        self.addCleanup(self.save, "pw.example", *live)
        self.save("pw.example", self.relay_a, "pw-user", "Pw-Secret-4Bad")
        cp = self.apply(templates_dir=str(templates))
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("no_such_router_option", cp.stderr)
        self.assertRegex(cp.stderr, rf"line {expected_line}\b.*routers\.conf"
                         r"|routers\.conf.*line "
                         rf"{expected_line}\b")
        self.assertTrue(self.last_line(cp).startswith("apply.failed"),
                        cp.stdout)
        self.assertEqual(self.current(), current)
        self.assertEqual(self.generations(), gens)
        self.assertEqual(sh.changed_keys(view, sh.live_view(self.output_dir,
                                                            current)), [])
        time.sleep(0.5)
        self.assertEqual(self.exim_state(), state, "Exim was signalled")
        self.assertLiveConfigPasses()
        self.assertArrivesAs("a@pw.example", *live)


class EximDiesOnReloadTest(SafetyCase):
    """F16 with a real Exim: the reload command kills the daemon.

    exim_reload_command is a script that kills the Exim daemon with SIGKILL
    (an Exim that does not come back), exim_restart_command one that starts
    the same Exim detached (-bd), as `systemctl restart exim4` would. A
    change of connect_timeout_s is rendered into transports.conf, so each
    faulty run needs a new generation and a reload.

    Without exim_restart_command the daemon restarts Exim its own way,
    which depends on whether systemd runs; those runs go through a wrapper
    that gives havenoro-relayd a mount namespace of its own with an empty
    /run, so the test decides that, not the machine running it.
    """

    RELOAD_TIMEOUT_S = 2
    PASSWORD = "F16-Secret-5Kp"

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.addClassCleanup(sh.stop_exim_by_pid_file, cls.exim)
        cls.reap(cls.exim.daemon)
        cls.relay = cls.start_relay("relay-a")
        cls.panel.write_user("alice")
        cls.relay.add_account("a-user", cls.PASSWORD)
        cls.panel.write_domain("alice", "a.example", {"smtp_relay":
                               h.relay_settings(cls.relay, username="a-user",
                                                password=cls.PASSWORD)})
        cls.panel.write_server_relay(None)
        cls.kill_script = sh.exim_kill_script(cls.exim,
                                              cls.work / "exim-reload.sh")
        cls.start_script = sh.exim_start_script(cls.exim,
                                                cls.work / "exim-restart.sh")
        cls.timeout_n = 0
        cls.systemctl_record = cls.work / "systemctl-args"
        # Stands for `systemctl restart exim4.service`: records what it was
        # asked and starts the same Exim, as systemd would.
        cls.systemctl = sh.write_script(
            cls.work / "systemctl",
            f"printf '%s\\n' \"$*\" >> '{cls.systemctl_record}'\n"
            f"exec '{cls.start_script}'\n")
        cls.without_systemd = cls.namespaced_relayd("relayd-no-systemd", [])
        cls.with_systemd = cls.namespaced_relayd("relayd-systemd", [
            "mkdir -p /run/systemd/system",
            f"mount --bind {shlex.quote(str(cls.systemctl))} "
            "/usr/bin/systemctl"])

    @classmethod
    def namespaced_relayd(cls, name, steps):
        """A script that runs havenoro-relayd (same arguments, same pid) in
        a private mount namespace whose /run is an empty tmpfs, after the
        shell commands `steps`."""
        inner = " && ".join(["mount -t tmpfs tmpfs /run", *steps,
                             'exec "$0" "$@"'])
        return sh.write_script(
            cls.work / name,
            "exec unshare --mount --propagation private -- sh -c "
            f"{shlex.quote(inner)} {shlex.quote(str(cls.binary))} \"$@\"\n")

    @staticmethod
    def reap(group):
        """Reaps the harness's Exim child as soon as it dies, so that it
        does not linger as a zombie that still answers kill(pid, 0)."""
        threading.Thread(target=group.proc.wait, daemon=True).start()

    def setUp(self):
        if self.exim.banner() is None:
            subprocess.run([str(self.start_script)], check=True, timeout=30)
            sh.wait_exim_up(self.exim)
        self.apply_ok()  # the default connect_timeout_s (15) is live
        self.assertRegex(self.transport_text(), r"connect_timeout = 15s")

    def transport_text(self):
        return self.exim.exim("-bP", "transport",
                              "havenoro_relay_smtp").stdout

    def faulty_config(self, **overrides):
        """A configuration with a new snippet setting and a reload that
        kills Exim."""
        type(self).timeout_n += 1
        return self.config(connect_timeout_s=5 + self.timeout_n,
                           reload_timeout_s=self.RELOAD_TIMEOUT_S,
                           exim_reload_command=[str(self.kill_script)],
                           **overrides)

    def faulty_apply(self, binary=None, **overrides):
        """A run whose reload kills Exim; returns it, the generation that
        was live before it, and the Exim pid before it."""
        current, pid = self.current(), self.exim.daemon_pid()
        starts = self.exim.daemon_starts()
        cp = h.run_relayd(binary or self.binary,
                          self.faulty_config(**overrides), self.work)
        self.assertFalse(sh.is_our_exim(pid, self.exim),
                         "the reload script did not kill Exim")
        return cp, current, pid, starts

    def exim_line(self, cp):
        """--once's one line about Exim."""
        lines = [line for line in cp.stderr.splitlines()
                 if line.startswith("havenoro-relayd: exim: ")]
        self.assertEqual(len(lines), 1, cp.stderr)
        return lines[0]

    def assertBackOnPrevious(self, current, pid, starts):
        """`current` is `current` again and a new Exim daemon serves it;
        returns the new daemon's argv."""
        self.assertEqual(self.current(), current)
        new_pid = sh.wait_exim_up(self.exim, old_pid=pid, timeout=5)
        self.assertGreater(self.exim.daemon_starts(), starts)
        self.assertLiveConfigPasses()
        self.assertRegex(self.transport_text(), r"connect_timeout = 15s")
        return Path(f"/proc/{new_pid}/cmdline").read_bytes().split(b"\0")

    def test_F16_exim_dying_on_reload_comes_back_on_previous_generation(self):
        """verifies exit 1 naming the failed reload, `current` back on the
        previous generation, Exim running again under a new pid on the
        previous snippets, its live configuration valid, mail flowing."""
        cp, current, pid, starts = self.faulty_apply(
            exim_restart_command=[str(self.start_script)])
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertTrue([line for line in cp.stderr.splitlines()
                         if "reload" in line and "did not come back" in line],
                        cp.stderr)
        self.assertTrue(self.last_line(cp).startswith("apply.failed"),
                        cp.stdout)
        self.assertEqual(self.current(), current)
        new_pid = sh.wait_exim_up(self.exim, old_pid=pid, timeout=5)
        self.assertNotEqual(new_pid, pid)
        self.assertTrue(self.exim.banner().startswith("220"))
        self.assertGreater(self.exim.daemon_starts(), starts)
        self.assertLiveConfigPasses()
        self.assertRegex(self.transport_text(), r"connect_timeout = 15s")
        self.assertArrivesAs("x@a.example", self.relay, "a-user",
                             self.PASSWORD)

    def test_F16_exim_dying_on_reload_is_restarted_by_default(self):
        """verifies that without exim_restart_command, where systemd does not
        run, Exim's daemon is started from exim_binary and exim_config
        (-bdf -q30m): exit 1 naming the failed reload, --once's exim line
        names that restart and the generation Exim is back on, `current`
        is the previous generation, and mail flows."""
        cp, current, pid, starts = self.faulty_apply(self.without_systemd)
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertTrue([line for line in cp.stderr.splitlines()
                         if "reload" in line and "did not come back" in line],
                        cp.stderr)
        self.assertIn(f"came back after the restart (default restart: "
                      f"{h.EXIM} -C {self.exim.config_file} -bdf -q30m); "
                      f"back on generation {current.split('/')[1]}",
                      self.exim_line(cp))
        argv = self.assertBackOnPrevious(current, pid, starts)
        self.assertEqual(argv[-3:], [b"-bdf", b"-q30m", b""], argv)
        self.assertArrivesAs("x@a.example", self.relay, "a-user",
                             self.PASSWORD)

    def test_F16_default_restart_under_systemd_asks_systemctl(self):
        """verifies that without exim_restart_command, where systemd runs,
        the restart is `systemctl restart exim4.service` (a stand-in that
        starts the same Exim) and --once's exim line says so."""
        self.systemctl_record.unlink(missing_ok=True)
        cp, current, pid, starts = self.faulty_apply(self.with_systemd)
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertEqual(self.systemctl_record.read_text(),
                         "restart exim4.service\n")
        self.assertIn("came back after the restart (default restart: "
                      "/usr/bin/systemctl restart exim4.service); back on "
                      f"generation {current.split('/')[1]}",
                      self.exim_line(cp))
        self.assertBackOnPrevious(current, pid, starts)

    def start_daemon(self, config):
        """The long-running daemon (without systemd, as above), ready."""
        daemon = dh.RelaydDaemon(self.without_systemd, config, self.work,
                                 name=f"relayd-{self.timeout_n}")
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        return daemon

    def wait_last_apply(self, daemon, result):
        def done():
            status = daemon.status()
            last = status.get("last_apply") or {}
            return status if last.get("result") == result else None
        return h.wait_until(done, 30, f"last_apply {result} in status-get")

    def assertNoSecret(self, daemon, status):
        self.assertNotIn(self.PASSWORD, json.dumps(status))
        self.assertNotIn(self.PASSWORD, daemon.log_text())

    def test_F16_failed_reload_shows_in_the_daemons_status(self):
        """verifies the long-running daemon: after a SIGHUP with a setting
        that changes the snippets and a reload that kills Exim, status-get
        shows the live generation as before, last_apply failed and
        last_failure with the reload's error, and exim not reloaded but
        back on that generation by the default restart; the log has
        apply.failed; no password in either."""
        current, pid = self.current(), self.exim.daemon_pid()
        starts = self.exim.daemon_starts()
        gen = int(current.split("/")[1])
        config = self.faulty_config()
        config["connect_timeout_s"] = 15  # as live: the first apply is idle
        daemon = self.start_daemon(config)
        self.assertEqual(daemon.status()["last_apply"]["result"], "unchanged")

        daemon.write_config(self.faulty_config())
        daemon.signal(signal.SIGHUP)
        status = self.wait_last_apply(daemon, "failed")
        self.assertEqual(status["generation"], gen, status)
        errors = status["last_apply"]["errors"]
        self.assertTrue([e for e in errors if e.startswith(
            "exim did not come back after the reload")], errors)
        self.assertEqual(status["last_failure"]["errors"], errors)
        self.assertFalse(status["exim"]["reloaded"], status["exim"])
        self.assertRegex(status["exim"]["message"],
                         r"came back after the restart \(default restart: "
                         rf".*\); back on generation {gen}$")
        self.assertTrue(daemon.log_events("apply.failed"), daemon.log_text())
        self.assertBackOnPrevious(current, pid, starts)
        self.assertNoSecret(daemon, status)

    def test_reload_without_a_readable_main_log_is_confirmed_and_says_so(self):
        """verifies a reload while exim_main_log names no file: pid and port
        confirm it (the apply goes live, Exim keeps its pid), and both
        status-get's exim message and a warning in the log say that the
        log could not be read."""
        pid = self.exim.daemon_pid()
        missing = self.work / "no-such-mainlog"
        config = self.config(connect_timeout_s=30, exim_main_log=str(missing),
                             reload_timeout_s=5)
        daemon = self.start_daemon(config)
        status = self.wait_last_apply(daemon, "applied")
        self.assertTrue(status["exim"]["reloaded"], status["exim"])
        self.assertIn(f"its main log '{missing}' cannot be read: confirmed "
                      "by pid and port only", status["exim"]["message"])
        warned = daemon.log_events("exim.log_unread")
        self.assertEqual(len(warned), 1, daemon.log_text())
        self.assertIn(f"log={missing}", warned[0])
        self.assertEqual(self.exim.daemon_pid(), pid)
        self.assertRegex(self.transport_text(), r"connect_timeout = 30s")
        self.assertNoSecret(daemon, status)


class DaemonHoldsAndAnswersTest(SafetyCase):
    """The long-running daemon: a user's directory gone with most relay
    domains is held back until confirmed, and a rollback that meets a
    planted symlink is answered at once."""

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.panel.write_user("alice")
        cls.panel.write_server_relay(None)
        cls.daemon = dh.RelaydDaemon(cls.binary, cls.config(), cls.work,
                                     name="relayd-holds")
        cls.addClassCleanup(cls.daemon.kill)
        cls.daemon.wait_ready()

    def reconcile(self, **arguments):
        reply = self.daemon.request("reconcile", timeout=120, wait=True,
                                    **arguments)
        self.assertEqual(reply["result"], 0, reply)
        return reply

    def test_rollback_meeting_a_planted_symlink_is_answered_at_once(self):
        """verifies `rollback` to a generation planted as a symlink, which
        the output directory refuses to open: an error reply naming the
        path within seconds (not the CLI's 60 s wait for an answer),
        `current` as it was, and the daemon still answering."""
        self.daemon.wait_idle()
        current = self.current()
        planted = self.output_dir / "generations" / "999999"
        os.symlink(self.output_dir / current, planted)
        self.addCleanup(planted.unlink, missing_ok=True)
        started = time.monotonic()
        reply = self.daemon.request("rollback", timeout=20,
                                    generation=999999)
        self.assertLess(time.monotonic() - started, 10, reply)
        self.assertEqual(reply["result"], 1, reply)
        self.assertIn("rollback failed", reply["text"])
        self.assertIn(str(planted), reply["text"])
        self.assertEqual(self.current(), current)
        self.assertIsNotNone(self.daemon.status()["last_apply"])

    def test_user_directory_gone_with_most_relays_is_held_back(self):
        """verifies a user's directory moved out of the panel tree (seen
        through inotify, not a resync) with 8 of the 10 live relay
        domains: their files stay, status-get's last_apply says why, the
        log has apply.held_back; `reconcile --confirm-removals` then
        removes them and keeps the other user's."""
        domains = {"carol": [f"c{i}.example" for i in range(8)],
                   "dave": ["d0.example", "d1.example"]}
        for user, names in domains.items():
            self.panel.write_user(user)
            for name in names:
                self.panel.write_domain(user, name, {"smtp_relay":
                                        h.relay_settings(port=2525)})
        self.reconcile()
        live = self.output_dir / "domains"
        self.assertEqual(sorted(os.listdir(live)),
                         sorted(domains["carol"] + domains["dave"]))

        os.rename(self.panel.user_dir("carol"), self.work / "carol-away")

        def held():
            last = self.daemon.status()["last_apply"]
            return last if last["held_back"] else None
        last = h.wait_until(held, 30, "a held-back removal in status-get")
        self.assertFalse(last["full"], last)
        self.assertEqual(last["result"], "rejected", last)
        self.assertIn("refusing to remove 8 of 10", last["held_back"][0])
        self.assertEqual(len(os.listdir(live)), 10)
        events = self.daemon.log_events("apply.held_back")
        self.assertEqual(len(events), 1, self.daemon.log_text())
        self.assertIn("domains=8", events[0])

        self.reconcile(confirm_removals=True)
        self.assertEqual(sorted(os.listdir(live)), domains["dave"])


# What --once prints, alone on its line, when the daemon kept the output
# directory locked for all of --once's wait.
ONCE_BUSY = re.compile(
    r"havenoro-relayd: output directory \S+ is busy: the havenoro-relayd "
    r"daemon \(pid \d+\) kept it locked for the 30 s waited; nothing was "
    r"changed; while the daemon runs, apply with havenoro-relayctl "
    r"reconcile --wait \(add --confirm-removals to confirm a mass "
    r"removal\)")


class OnceBesideTheDaemonTest(SafetyCase):
    """`havenoro-relayd --once` while the long-running daemon applies to the
    same output directory: one applier at a time (the lock file `.lock`),
    neither fails for the other, and neither leaves stale settings live."""

    DOMAINS = [f"b{i}.example" for i in range(6)]

    @classmethod
    def setUpClass(cls):
        cls.start_parts()
        cls.relay = cls.start_relay("relay-once", check_accounts=False)
        cls.panel.write_user("alice")
        cls.panel.write_server_relay(None)
        cls.want = {}  # domain -> (username, password) as saved last
        for domain in cls.DOMAINS:
            cls.want[domain] = (f"user-{domain}-0", f"Pw-{domain}-0")
            cls.save(domain)
        cls.daemon = dh.RelaydDaemon(cls.binary, cls.config(), cls.work,
                                     name="relayd-once")
        cls.addClassCleanup(cls.daemon.kill)
        cls.daemon.wait_ready()

    @classmethod
    def save(cls, domain):
        username, password = cls.want[domain]
        relay = h.relay_settings(cls.relay, username=username,
                                 password=password)
        cls.panel.write_domain("alice", domain, {"smtp_relay": relay})

    def expected(self):
        """domain -> (route, username, password) as the panel says."""
        return {d: (f"localhost:{self.relay.port}", u, p)
                for d, (u, p) in self.want.items()}

    def assertAllAgree(self, failed_before):
        """After the daemon went idle: every live credential file as the
        panel's settings render it, the same in `domain-get`, no failed
        apply in the daemon's log, no leftover in the output directory."""
        self.daemon.wait_idle()
        self.assertEqual(self.live_files(), self.expected())
        for domain, (username, _) in self.want.items():
            reply = self.daemon.request("domain-get", domain=domain)
            got = reply["arguments"]
            self.assertEqual((got["route"], got["relay"]["username"]),
                             ("relay", username), reply)
        failed = self.daemon.log_events("apply.failed")[failed_before:]
        self.assertEqual(failed, [], self.daemon.log_text()[-4000:])
        self.assertEqual(sh.dot_entries(self.output_dir), [])

    def test_once_while_the_daemon_applies_saves_takes_its_turn(self):
        """verifies --once run again and again for 6 s
        while a few domains are saved every 50 ms and the daemon applies
        each save. Each run applies (exit 0, no problem line) or, had the
        daemon kept the lock for 30 s, fails with the one line naming the
        daemon; the daemon fails no apply; afterwards the live files, the
        daemon's `domain-get` and a message through the relay all carry the
        last saved credentials."""
        self.daemon.wait_idle()
        failed_before = len(self.daemon.log_events("apply.failed"))
        stop = threading.Event()
        errors = []

        def saver():
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    domain = self.DOMAINS[n % 3]  # a few, again and again
                    self.want[domain] = (f"user-{domain}-{n}",
                                         f"Pw-{domain}-{n}")
                    self.save(domain)
                    stop.wait(0.05)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        thread = threading.Thread(target=saver, daemon=True)
        thread.start()
        runs = []
        try:
            # Back to back; a run takes some 10 ms.
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and len(runs) < 200:
                runs.append(self.apply())
        finally:
            stop.set()
            thread.join(10)
        self.assertEqual(errors, [])
        self.assertGreaterEqual(len(runs), 3, "too few --once runs")
        for cp in runs:
            problems = [line for line in cp.stderr.splitlines()
                        if line.startswith("havenoro-relayd: ")
                        and not line.startswith("havenoro-relayd: warning:")]
            if cp.returncode == 0:
                self.assertEqual(problems, [], cp.stderr)
                self.assertRegex(self.last_line(cp),
                                 r"^apply\.(done|unchanged) ")
            else:
                self.assertEqual(len(problems), 1, cp.stderr)
                self.assertRegex(problems[0], f"^{ONCE_BUSY.pattern}$")
        self.assertAllAgree(failed_before)
        domain = self.DOMAINS[1]
        username, password = self.want[domain]
        self.assertArrivesAs(f"sender@{domain}", self.relay, username,
                             password)

    def test_once_waits_for_the_lock_and_then_applies(self):
        """verifies --once and the daemon while another process holds the
        output directory's lock: both wait (and say so after a second,
        naming the holder's pid), nothing live changes meanwhile, and once
        the lock is let go --once exits 0 and the saved settings are live
        and in `domain-get`."""
        self.daemon.wait_idle()
        failed_before = len(self.daemon.log_events("apply.failed"))
        waiting_before = len(self.daemon.log_events("apply.waiting"))
        config = sh.write_config(self.config(), self.work / "once-wait.json")
        stderr = self.work / "once-wait.stderr"
        domain = self.DOMAINS[4]
        lock = os.open(self.output_dir / ".lock", os.O_RDWR | os.O_NOFOLLOW)
        proc = None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            before = self.live_files()
            self.want[domain] = ("user-held", "Pw-held")
            self.save(domain)
            with open(stderr, "w") as err:
                proc = subprocess.Popen(
                    [str(self.binary), "--config", str(config), "--once"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=err, text=True)
            holder = f"holder=unknown pid={os.getpid()} "
            h.wait_until(lambda: holder in stderr.read_text(), 15,
                         "--once's apply.waiting")
            h.wait_until(lambda: len(self.daemon.log_events(
                "apply.waiting")) > waiting_before, 15,
                "the daemon's apply.waiting")
            self.assertIn(holder, self.daemon.log_events("apply.waiting")[-1])
            self.assertIsNone(proc.poll(), stderr.read_text())
            self.assertEqual(self.live_files(), before)
        finally:
            os.close(lock)  # lets go of the lock
            if proc is not None:
                out, _ = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, stderr.read_text())
        # The daemon may have taken the lock first and applied the save.
        self.assertRegex(out.strip().splitlines()[-1],
                         r"^apply\.(done|unchanged) ")
        self.assertEqual(self.live_files()[domain],
                         self.expected()[domain])
        self.assertAllAgree(failed_before)


if __name__ == "__main__":
    unittest.main()
