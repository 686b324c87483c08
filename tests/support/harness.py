"""Pieces for tests and the demo that run real parts together.

A test here runs the real havenoro-relayd binary against a panel tree in a
temporary directory, a private Exim daemon on a loopback port with its own
spool and logs, and aiosmtpd relays that record what they received. Nothing
is faked, so a test sees what a server would do; everything is bound to
127.0.0.1 and every wait is bounded in time.

Exim started with -C on a file outside Debian's trusted list runs as
Debian-exim, so every directory and file it reads is made readable by that
user (tempfile.mkdtemp gives 0700; the work directories here are 0755).
"""

import base64
import contextlib
import email.message
import email.utils
import grp
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = REPO / "exim-templates"
EXAMPLE_CONFIG = TEMPLATES_DIR / "exim4.conf.example"
RELAY_SERVER = REPO / "tests" / "support" / "relay_server.py"
DEFAULT_BINARY = REPO / "build" / "src" / "daemon" / "havenoro-relayd"
PYTHON = "/usr/bin/python3"
EXIM = "/usr/sbin/exim4"
EXIM_USER = "Debian-exim"
LOOPBACK = "127.0.0.1"

# Every Exim process started with -C writes this to the panic log; it is
# expected and says nothing about the configuration.
LOST_PRIVILEGE = "exim user lost privilege for using -C option"


class HarnessError(Exception):
    """A part of the test set-up did not come up or misbehaved."""


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_is_free(port):
    """Whether this process could bind the port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate until it returns something true, or raises.

    Every wait in the harness goes through here so that none can hang a
    test run; the message names what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for "
                               f"{what}")
        time.sleep(interval)


def make_workdir(prefix="havenoro-test-"):
    """A fresh temporary directory that Debian-exim can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def exim_ids():
    """uid and gid of Exim's user, which owns spool, logs and lookups."""
    return pwd.getpwnam(EXIM_USER).pw_uid, grp.getgrnam(EXIM_USER).gr_gid


def relayd_binary():
    """Path of the havenoro-relayd binary under test.

    CTest passes it in HAVENORO_RELAYD; by hand the build tree's default
    is used. A missing binary is an error, never a reason to skip.
    """
    path = Path(os.environ.get("HAVENORO_RELAYD", DEFAULT_BINARY))
    if not os.access(path, os.X_OK):
        raise HarnessError(f"havenoro-relayd binary not found at {path}; "
                           "build it or set HAVENORO_RELAYD")
    return path


def b64(data):
    """Base64 text of bytes or UTF-8 text, as credential files hold it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


class ProcessGroup:
    """A child process in its own session, stopped with its whole group.

    Exim's daemon forks delivery and queue-runner processes, and the relay
    starts threads; killing the process group leaves none behind.
    """

    def __init__(self, argv, stdout_path, stderr_path, **kwargs):
        self.argv = [str(a) for a in argv]
        self.stdout_path = Path(stdout_path)
        self.stderr_path = Path(stderr_path)
        with open(self.stdout_path, "ab") as out, \
                open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err,
                                         start_new_session=True, **kwargs)
        self.pid = self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def stderr_text(self):
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout=10):
        """Sends SIGTERM to the group, then SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children that outlived the leader still belong to the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


class TestCA:
    """A throwaway CA and a server certificate for localhost.

    The certificate names DNS:localhost and IP:127.0.0.1, so a relay routed
    as "localhost:PORT" passes Exim's certificate name check. Files are
    world-readable because Exim's delivery processes run as Debian-exim.
    """

    __test__ = False  # not a unittest class despite its name

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.ca_file = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self.cert_file = self.dir / "localhost.pem"
        self.key_file = self.dir / "localhost.key"
        self._make()

    def _openssl(self, *args):
        subprocess.run(["openssl", *map(str, args)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)

    def _make(self):
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        self._openssl("req", "-x509", *ec, "-nodes", "-days", "3",
                      "-keyout", self.ca_key, "-out", self.ca_file,
                      "-subj", "/CN=Havenoro Test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        csr = self.dir / "localhost.csr"
        ext = self.dir / "localhost.ext"
        ext.write_text("basicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\n"
                       "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        self._openssl("req", "-new", *ec, "-nodes", "-keyout", self.key_file,
                      "-out", csr, "-subj", "/CN=localhost")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca_file,
                      "-CAkey", self.ca_key, "-CAcreateserial", "-days", "3",
                      "-out", self.cert_file, "-extfile", ext)
        for path in (self.ca_file, self.cert_file, self.key_file):
            path.chmod(0o644)


class PanelTree:
    """The panel's settings tree, written the way Havenoro CP writes it.

    Directories 0700 and files 0600, root-owned, as on a server: the daemon
    runs as root and must cope with that. Saves go through ".<name>.tmp"
    and a rename, like the panel; write_domain_raw writes in place, like an
    admin's editor, for half-written or broken files.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.users_dir = self.root / "data" / "users"
        self._mkdir(self.root / "conf")
        self._mkdir(self.users_dir)

    @staticmethod
    def _mkdir(path):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)

    @staticmethod
    def _save(path, text):
        """Writes .<name>.tmp beside the file and renames it over."""
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.rename(tmp, path)

    @staticmethod
    def _json(data):
        # The panel stores UTF-8 as such, not as \\u escapes.
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def user_dir(self, user):
        return self.users_dir / user

    def domain_file(self, user, domain):
        return self.user_dir(user) / "mail" / f"{domain}.json"

    def write_user(self, user, suspended=False):
        self._mkdir(self.user_dir(user) / "mail")
        self._save(self.user_dir(user) / "user.json",
                   self._json({"user": user, "suspended": suspended}))

    def write_domain(self, user, domain, settings):
        """Saves a domain; settings is the file's object ("domain" added)."""
        data = {"domain": domain, "suspended": False}
        data.update(settings)
        self._mkdir(self.user_dir(user) / "mail")
        self._save(self.domain_file(user, domain), self._json(data))

    def write_domain_raw(self, user, domain, text):
        """Writes a domain file in place, byte for byte as given."""
        self._mkdir(self.user_dir(user) / "mail")
        path = self.domain_file(user, domain)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)

    def remove_domain(self, user, domain):
        self.domain_file(user, domain).unlink()

    def write_server_relay(self, relay):
        """Sets the server-wide relay; None leaves mail.json without one."""
        data = {} if relay is None else {"smtp_relay": relay}
        self._save(self.root / "conf" / "mail.json", self._json(data))


def relay_settings(relay=None, *, host="localhost", port=None,
                   username=None, password=None, security=None,
                   verify=None, enabled=True, **extra):
    """A domain's "smtp_relay" object pointing at a test relay.

    Absent arguments stay absent from the object, so the daemon's defaults
    (port 587, security auto, verify true) are what a test exercises.
    """
    data = {"enabled": enabled, "host": host}
    if port is None and relay is not None:
        port = relay.port
    if port is not None:
        data["port"] = port
    for key, value in (("security", security), ("username", username),
                       ("password", password),
                       ("verify_certificate", verify)):
        if value is not None:
            data[key] = value
    data.update(extra)
    return data


class Relay:
    """A relay_server.py process on a free loopback port.

    mode is "starttls", "tls" (TLS from the first byte) or "plain";
    mechanisms "" offers no AUTH (an MX sink). received() lists accepted
    messages with username and password decoded to bytes. With
    check_accounts the relay accepts only pairs given to add_account(), as
    a provider does: wrong credentials get 535 instead of being recorded,
    and Exim's fallback from one mechanism to the next is exercised.
    """

    def __init__(self, workdir, name, mode="starttls",
                 mechanisms="PLAIN,LOGIN", auth_reply=None, mail_reply=None,
                 ca=None, port=None, check_accounts=False):
        self.name = name
        self.mode = mode
        self.dir = Path(workdir) / f"relay-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.record = self.dir / "received.jsonl"
        self.events = self.dir / "events.jsonl"
        self.ready = self.dir / "ready"
        self.accounts = self.dir / "accounts.jsonl"
        self.port = port if port is not None else free_port()
        argv = [PYTHON, RELAY_SERVER, "--name", name, "--port", self.port,
                "--mode", mode, "--mechanisms", mechanisms,
                "--record", self.record, "--events", self.events,
                "--ready-file", self.ready]
        if mode != "plain":
            if ca is None:
                raise HarnessError(f"relay {name}: mode {mode} needs a CA")
            argv += ["--cert", ca.cert_file, "--key", ca.key_file]
        if check_accounts:
            self.accounts.touch()
            argv += ["--accounts", self.accounts]
        if auth_reply:
            argv += ["--auth-reply", auth_reply]
        if mail_reply:
            argv += ["--mail-reply", mail_reply]
        self.process = ProcessGroup(argv, self.dir / "stdout",
                                    self.dir / "stderr")
        try:
            wait_until(self._is_ready, 15, f"relay {name} to start")
        except HarnessError:
            self.stop()
            raise HarnessError(f"relay {name} did not start: "
                               f"{self.process.stderr_text()}")

    def add_account(self, username, password):
        """Lets this username and password (text or bytes) authenticate."""
        with open(self.accounts, "a", encoding="utf-8") as f:
            f.write(json.dumps({"username_b64": b64(username),
                                "password_b64": b64(password)}) + "\n")

    def _is_ready(self):
        if not self.process.running():
            raise HarnessError(f"relay {self.name} exited: "
                               f"{self.process.stderr_text()}")
        return self.ready.exists()

    @staticmethod
    def _read_jsonl(path):
        if not path.exists():
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def received(self):
        """Messages accepted so far, credentials as bytes (or None)."""
        out = []
        for entry in self._read_jsonl(self.record):
            for key in ("username", "password"):
                raw = entry.get(f"{key}_b64")
                entry[key] = None if raw is None else base64.b64decode(raw)
            out.append(entry)
        return out

    def auth_attempts(self):
        """Every AUTH the relay was asked for, refused ones included."""
        return self._read_jsonl(self.events)

    def messages_with(self, token):
        """Accepted messages whose text contains token (e.g. a subject)."""
        return [m for m in self.received() if token in m["data"]]

    def stop(self):
        self.process.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class SilentListener:
    """A port that accepts connections and never says anything.

    It stands for a relay that hangs before its banner, or a STARTTLS
    client talking to a TLS-only port: the client must give up on its own
    after a bounded time.
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections.append(conn)
            self.accepted(conn)

    def accepted(self, conn):
        """Called for each connection; a subclass may speak on it."""

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.connections:
            conn.close()
        self.sock.close()


class RouteResult:
    """What `exim -bt` said about one address."""

    def __init__(self, returncode, text):
        self.returncode = returncode
        self.text = text
        m = re.search(r"router = (\S+?), transport = (\S+)", text)
        self.router = m.group(1) if m else None
        self.transport = m.group(2) if m else None
        self.hosts = re.findall(r"^\s+host (\S+) \[([^\]]+)\]"
                                r"(?: port=(\d+))?", text, re.M)

    def __repr__(self):
        return (f"RouteResult(rc={self.returncode}, router={self.router}, "
                f"transport={self.transport}, hosts={self.hosts})")


class EximInstance:
    """A private Exim daemon running exim4.conf.example on a free port.

    The configuration is the example with three changes made as text: the
    output directory replaces /etc/exim4/havenoro-relay, the test's main
    options (spool, logs, pid file, port) follow the .include_if_exists
    line, and direct delivery becomes a manualroute router to the MX sink,
    which stands for "the recipient's MX" so a test sees mail that did not
    go through a relay.

    Two test-only additions stand for what an admin configures beside the
    example: submission_account (user, password) lets a mail client
    authenticate with AUTH PLAIN, as a server's Dovecot or SASL setup
    would; hosted_domains are domains whose mailboxes are on this server:
    they join local_domains and their mail is appended to mailbox(domain).
    """

    def __init__(self, workdir, output_dir, mx_sink_port,
                 example=EXAMPLE_CONFIG, submission_account=None,
                 hosted_domains=()):
        self.dir = Path(workdir) / "exim"
        self.output_dir = Path(output_dir)
        self.mx_sink_port = mx_sink_port
        self.submission_account = submission_account
        uid, gid = exim_ids()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.spool_dir = self.dir / "spool"
        self.log_dir = self.dir / "log"
        for d in (self.spool_dir, self.log_dir):
            d.mkdir(exist_ok=True)
            os.chown(d, uid, gid)
            d.chmod(0o750)
        self.mailbox_dir = self.dir / "mailboxes"
        self.hosted_domains = list(hosted_domains)
        if self.hosted_domains:
            # One directory per hosted domain: dsearch finds the domain
            # there, and its (untainted) name becomes the mailbox path.
            for domain in [""] + self.hosted_domains:
                d = self.mailbox_dir / domain
                d.mkdir(exist_ok=True)
                os.chown(d, uid, gid)
                d.chmod(0o755)
        self.config_file = self.dir / "exim.conf"
        self.pid_file = self.spool_dir / "exim-daemon.pid"
        self.mainlog = self.log_dir / "mainlog"
        self.paniclog = self.log_dir / "paniclog"
        self.rejectlog = self.log_dir / "rejectlog"
        self.port = free_port()
        self.daemon = None
        self.config_file.write_text(self._config_text(Path(example)))
        self.config_file.chmod(0o644)

    def _config_text(self, example):
        text = example.read_text()
        text = text.replace("/etc/exim4/havenoro-relay", str(self.output_dir))
        main = "\n".join([
            "",
            "# Test main options (tests/support/harness.py).",
            f"spool_directory = {self.spool_dir}",
            f"log_file_path = {self.log_dir}/%slog",
            f"pid_file_path = {self.pid_file}",
            f"daemon_smtp_ports = {self.port}",
            f"local_interfaces = {LOOPBACK}",
            "primary_hostname = mail.havenoro.test",
            "tls_advertise_hosts =",
            # Loopback only: "localhost" is not asked of DNS for an IPv6
            # address (an /etc/hosts without ::1 would send the query to
            # the machine's resolver, and a timeout defers the mail).
            "dns_ipv4_lookup = localhost",
            "",
        ])
        # Nor is the name of a connecting 127.0.0.1 asked of DNS.
        text = re.sub(r"^host_lookup = .*$", "host_lookup =", text,
                      flags=re.M)
        text, n = re.subn(r"^(\.include_if_exists .*\n)",
                          lambda m: m.group(1) + main, text, count=1,
                          flags=re.M)
        if n != 1:
            raise HarnessError(f"{example}: no .include_if_exists line")
        direct = "\n".join([
            "direct:",
            "  driver = manualroute",
            "  domains = ! +local_domains",
            "  transport = remote_smtp",
            f"  route_list = * {LOOPBACK}::{self.mx_sink_port}",
            "  self = send",
            "  no_more",
            "",
        ])
        text, n = re.subn(r"(# BEGIN direct delivery\n).*?"
                          r"(# END direct delivery)",
                          lambda m: m.group(1) + direct + m.group(2), text,
                          count=1, flags=re.S)
        if n != 1:
            raise HarnessError(f"{example}: no direct delivery block")
        if self.hosted_domains:
            text = self._add_hosted_mailboxes(text, example)
        if self.submission_account:
            text = self._add_submission_auth(text, example)
        return text

    def _add_hosted_mailboxes(self, text, example):
        """Local delivery for hosted_domains, into files under the work
        directory (Exim runs as Debian-exim here and cannot write
        /var/mail as a mailbox owner would)."""
        boxes = f"dsearch;{self.mailbox_dir}"
        text, n = re.subn(r"^(domainlist local_domains = .*)$",
                          lambda m: f"{m.group(1)} : {boxes}", text,
                          count=1, flags=re.M)
        router = "\n".join([
            "# Test: hosted domains' mailboxes (tests/support/harness.py).",
            "hosted_mailbox:",
            "  driver = accept",
            f"  domains = {boxes}",
            "  transport = hosted_mailbox_file",
            "",
            "",
        ])
        text, r = re.subn(r"^(?=system_aliases:)", lambda m: router, text,
                          count=1, flags=re.M)
        transport = "\n".join([
            "# Test: hosted domains' mailboxes (tests/support/harness.py).",
            "hosted_mailbox_file:",
            "  driver = appendfile",
            f"  file = {self.mailbox_dir}/$domain_data/mbox",
            f"  user = {EXIM_USER}",
            "  envelope_to_add",
            "  return_path_add",
            "",
            "",
        ])
        text, s = re.subn(r"^(?=begin retry$)", lambda m: transport, text,
                          count=1, flags=re.M)
        if (n, r, s) != (1, 1, 1):
            raise HarnessError(f"{example}: no local_domains, "
                               "system_aliases or retry section")
        return text

    def _add_submission_auth(self, text, example):
        """A server authenticator for mail clients, at the end of the
        authenticators section (the example's last)."""
        if re.findall(r"^begin (\w+)$", text, re.M)[-1:] != \
                ["authenticators"]:
            raise HarnessError(f"{example}: authenticators is not the "
                               "last section")
        user, password = self.submission_account
        if not all(re.fullmatch(r"[\w.@-]+", v) for v in (user, password)):
            raise HarnessError("submission account: letters, digits, '@', "
                               "'.', '-' and '_' only (no quoting here)")
        return text + "\n".join([
            "",
            "# Test: mail clients authenticate for submission "
            "(tests/support/harness.py).",
            "test_submission:",
            "  driver = plaintext",
            "  public_name = PLAIN",
            "  server_prompts = :",
            "  server_condition = ${if and{{eq{$auth2}{%s}}"
            "{eq{$auth3}{%s}}}}" % (user, password),
            "  server_set_id = $auth2",
            "",
        ])

    def mailbox(self, domain):
        """What local delivery appended for a hosted domain, as text."""
        path = self.mailbox_dir / domain / "mbox"
        return path.read_text(errors="replace") if path.exists() else ""

    def exim(self, *args, input=None, timeout=60):
        """Runs the Exim binary on this configuration (as the caller)."""
        return subprocess.run([EXIM, "-C", str(self.config_file),
                               *map(str, args)], input=input,
                              capture_output=True, text=True,
                              timeout=timeout)

    def start(self, timeout=20, queue_interval="15s"):
        """Starts the daemon and waits until it answers with a banner.

        -bdf keeps the daemon in the foreground of its own session, so it
        stays our child across the SIGHUP re-exec and stop() can end its
        whole process group; otherwise it is what -bd runs. A long
        queue_interval lets a test see whether held mail moves without
        waiting for Exim's own queue runner.
        """
        self.daemon = ProcessGroup(
            [EXIM, "-C", self.config_file, "-bdf", f"-q{queue_interval}"],
            self.dir / "daemon.stdout", self.dir / "daemon.stderr")
        try:
            wait_until(self._started, timeout, "Exim daemon to answer")
        except HarnessError as e:
            self.stop()
            raise HarnessError(f"{e}: {self._tail(self.paniclog)}"
                               f"{self.daemon.stderr_text()}")

    def _started(self):
        if not self.daemon.running():
            raise HarnessError("Exim daemon exited: "
                               f"{self.daemon.stderr_text()}")
        return self.pid_file.exists() and self.banner() is not None

    def banner(self):
        """The daemon's 220 line, or None while it does not answer."""
        try:
            with socket.create_connection((LOOPBACK, self.port),
                                          timeout=2) as s:
                line = s.makefile("rb").readline().decode(errors="replace")
        except OSError:
            return None
        return line if line.startswith("220") else None

    def daemon_pid(self):
        """The pid Exim wrote, as relayd reads it."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def send(self, sender, rcpt, subject, body="test message\n",
             headers=None, login=None, source_address=None):
        """Submits one message over SMTP and returns Exim's message id.

        sender "" sends MAIL FROM:<>, as bounces and autoreplies do. login
        (user, password) authenticates first, as a mail client submitting
        for its user does; source_address is the client's own loopback
        address (another one than 127.0.0.1 is not in relay_from_hosts).
        """
        msg = email.message.EmailMessage()
        msg["From"] = sender or "MAILER-DAEMON@mail.havenoro.test"
        msg["To"] = rcpt
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate()
        msg["Message-ID"] = email.utils.make_msgid(domain="havenoro.test")
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(body)
        source = (source_address, 0) if source_address else None
        with smtplib.SMTP(LOOPBACK, self.port, timeout=30,
                          local_hostname="client.havenoro.test",
                          source_address=source) as smtp:
            self._expect(smtp.ehlo(), 250, "EHLO")
            if login:
                self._expect(smtp.login(*login), 235, "AUTH")
            self._expect(smtp.mail(sender), 250, "MAIL FROM")
            self._expect(smtp.rcpt(rcpt), 250, "RCPT TO")
            code, reply = smtp.data(msg.as_bytes())
            self._expect((code, reply), 250, "DATA")
        m = re.search(rb"id=(\S+)", reply)
        if not m:
            raise HarnessError(f"no message id in {reply!r}")
        return m.group(1).decode()

    def submit_local(self, rcpt, subject, sender=None, body="test\n"):
        """Submits a message as a local program does (`sendmail [-f]`).

        Run as root, as cron and the panel's own mail do; Exim gives up
        privilege for -C and delivers at once (-odi) before returning.
        """
        args = ["-odi", "-oi"]
        if sender is not None:
            args += ["-f", sender]
        text = f"To: {rcpt}\nSubject: {subject}\n\n{body}"
        return self.exim(*args, rcpt, input=text)

    def submit_as(self, user, rcpt, subject, sender=None, body="test\n"):
        """Submits a message as `sendmail [-f]` run by an unprivileged
        user (a web application's mail()), delivering at once (-odi).

        Exim keeps its setuid privilege with -C only for root and its own
        user; any other caller runs it as itself, and it cannot write the
        spool. A server's Exim reads its installed configuration instead
        (first on its search path: /etc/exim4/exim4.conf). So the user's
        command runs in a private mount namespace in which /etc/exim4
        holds this instance's configuration: the setuid Exim takes it as
        its own, and nothing outside the namespace sees the change.
        """
        etc = self.dir / "etc-exim4"
        etc.mkdir(exist_ok=True)
        etc.chmod(0o755)
        # Exim refuses a configuration that is not root's or is writable
        # by others.
        shutil.copyfile(self.config_file, etc / "exim4.conf")
        (etc / "exim4.conf").chmod(0o644)
        args = ["-odi", "-oi"]
        if sender is not None:
            args += ["-f", sender]
        script = 'mount --bind "$1" /etc/exim4 && shift && exec "$@"'
        text = f"To: {rcpt}\nSubject: {subject}\n\n{body}"
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--",
             "sh", "-c", script, "sh", str(etc),
             "runuser", "-u", user, "--", EXIM, *args, rcpt],
            input=text, capture_output=True, text=True, timeout=60)

    def retry_records(self):
        """Exim's retry hints (`exim_dumpdb SPOOL retry`), by key.

        Each value has errno (Exim's basic errno, e.g. -42 for a refused
        login), text, and first_failed, last_try and next_try as epoch
        seconds: Exim keeps them to the second.
        """
        cp = subprocess.run(["exim_dumpdb", str(self.spool_dir), "retry"],
                            capture_output=True, text=True, timeout=30)
        records = {}
        lines = cp.stdout.splitlines()
        for head, times in zip(lines, lines[1:]):
            m = re.match(r"^\s+([TR]:\S+) (-?\d+) (-?\d+) (.*)$", head)
            stamps = re.findall(r"\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d", times)
            if not m or len(stamps) != 3:
                continue
            first, last, next_ = (
                time.mktime(time.strptime(s, "%d-%b-%Y %H:%M:%S"))
                for s in stamps)
            records[m.group(1)] = {
                "errno": int(m.group(2)), "text": m.group(4),
                "first_failed": first, "last_try": last, "next_try": next_}
        return records

    @staticmethod
    def _expect(reply, code, what):
        if reply[0] != code:
            raise HarnessError(f"Exim refused {what}: {reply}")

    def flush(self, timeout=120):
        """Runs a forced queue run (-qff), even for frozen messages."""
        return self.exim("-qff", timeout=timeout)

    def route(self, sender, rcpt):
        """`exim -f sender -bt rcpt`: router, transport and hosts."""
        cp = self.exim("-f", sender, "-bt", rcpt)
        return RouteResult(cp.returncode, cp.stdout + cp.stderr)

    def log_lines(self, which="main"):
        path = self.log_dir / f"{which}log"
        if not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()

    def message_log(self, msgid):
        """mainlog lines about one message."""
        return [line for line in self.log_lines() if f" {msgid} " in line]

    def delivery(self, msgid):
        """(kind, line) for the message's first outcome, or None.

        kind is "=>" delivered, "==" deferred, "**" bounced or "frozen".
        """
        for line in self.message_log(msgid):
            m = re.search(rf" {re.escape(msgid)} (=>|==|\*\*) ", line)
            if m:
                return m.group(1), line
            if "Frozen" in line:
                return "frozen", line
        return None

    def wait_delivery(self, msgid, timeout=30):
        """Waits for the first delivery outcome of a message."""
        return wait_until(lambda: self.delivery(msgid), timeout,
                          f"an outcome for message {msgid}")

    def daemon_starts(self):
        """How many times the daemon logged that it started."""
        return sum("daemon started" in line for line in self.log_lines())

    def panics(self):
        """Panic log lines other than the normal lost-privilege one."""
        return [line for line in self.log_lines("panic")
                if LOST_PRIVILEGE not in line]

    @staticmethod
    def _tail(path, lines=20):
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace")
                         .splitlines()[-lines:]) + "\n"


def log_field(line, name):
    """A field such as R=, T=, A= or C= from an Exim log line, or None."""
    m = re.search(rf"(?:^| ){name}=(\"[^\"]*\"|\S+)", line)
    return m.group(1).strip('"') if m else None


def relayd_config(panel, exim, ca, templates_dir=TEMPLATES_DIR,
                  **overrides):
    """The daemon configuration that ties it to these test parts."""
    config = {
        "panel_root": str(panel.root),
        "output_dir": str(exim.output_dir),
        "templates_dir": str(templates_dir),
        "exim_binary": EXIM,
        "exim_config": str(exim.config_file),
        "exim_pid_file": str(exim.pid_file),
        "exim_main_log": str(exim.mainlog),
        "exim_probe_address": f"{LOOPBACK}:{exim.port}",
        "tls_ca_certificates": str(ca.ca_file),
        "allow_private_relays": True,
    }
    config.update(overrides)
    return config


_run_counter = [0]


def run_relayd(binary, config, workdir, extra_args=(), timeout=120):
    """Writes the config and runs `havenoro-relayd --config F --once`.

    Returns the CompletedProcess with text output; each run keeps its own
    config file, so a failing test can be replayed by hand.
    """
    _run_counter[0] += 1
    path = Path(workdir) / f"relayd-{_run_counter[0]}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    return subprocess.run([str(binary), "--config", str(path), "--once",
                           *map(str, extra_args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def snapshot(tree):
    """Every entry under tree: path -> (kind, inode, mtime_ns, content).

    Lets a test prove that a run left files exactly as they were: same
    link targets, same inodes, same bytes.
    """
    tree = Path(tree)
    out = {}
    if not tree.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                out[str(path.relative_to(tree))] = (
                    "link", st.st_ino, st.st_mtime_ns, os.readlink(path))
            elif path.is_dir():
                out[str(path.relative_to(tree))] = (
                    "dir", st.st_ino, st.st_mtime_ns, None)
            else:
                out[str(path.relative_to(tree))] = (
                    "file", st.st_ino, st.st_mtime_ns, path.read_bytes())
    return out


def remove_tree(path):
    """Removes a work directory, whoever owns what is in it."""
    shutil.rmtree(path, ignore_errors=True)


class ArgvWatcher:
    """Samples every process's argv while it runs.

    A password must never reach an argv, where any local user can read it
    (/proc/*/cmdline is world-readable). Sampling cannot see a process that
    lives less than a poll, so this finds leaks, it does not prove absence.
    """

    def __init__(self, interval=0.002):
        self.interval = interval
        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        own = str(os.getpid())
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == own:
                    continue
                with contextlib.suppress(OSError):
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        self.seen.add(f.read())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
