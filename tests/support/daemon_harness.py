"""havenoro-relayd as a long-running daemon, for tests and the demo.

RelaydDaemon starts the real binary on a configuration that harness.py's
relayd_config() builds, with its control socket in the test's work
directory, and talks to it the way havenoro-relayctl does: one JSON
request per line, one JSON reply per line. Every wait is bounded.
"""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import harness as h

DEFAULT_CTL = h.REPO / "build" / "src" / "ctl" / "havenoro-relayctl"


def relayctl_binary():
    """Path of havenoro-relayctl under test (HAVENORO_RELAYCTL or build/)."""
    path = Path(os.environ.get("HAVENORO_RELAYCTL", DEFAULT_CTL))
    if not os.access(path, os.X_OK):
        raise h.HarnessError(f"havenoro-relayctl not found at {path}; "
                             "build it or set HAVENORO_RELAYCTL")
    return path


class ControlConnection:
    """One raw connection to the control socket, for tests that misbehave
    on purpose (half lines, oversized lines) as well as for requests."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self._buffer = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def read_line(self):
        """The next line, or None when the daemon closed the connection."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def request(self, command, **arguments):
        """Sends one request and returns the parsed reply."""
        doc = {"command": command}
        if arguments:
            doc["arguments"] = arguments
        self.send(json.dumps(doc) + "\n")
        line = self.read_line()
        if line is None:
            raise h.HarnessError(f"{command}: connection closed, no reply")
        return json.loads(line)

    def closed_by_peer(self, timeout):
        """Whether the daemon closes this connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RelaydDaemon:
    """`havenoro-relayd --config F` running until stop().

    The socket and the log are in workdir; log_text() is what the daemon
    wrote to standard error (spdlog, debug level). env adds to the
    daemon's environment (NOTIFY_SOCKET, for one).
    """

    def __init__(self, binary, config, workdir, name="relayd", env=None):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "control.sock"
        config = dict(config)
        config.setdefault("control_socket", str(self.socket))
        self.socket = Path(config["control_socket"])
        self.config = config
        self.config_file = self.dir / "config.json"
        self.write_config(config)
        self.log_file = self.dir / "stderr"
        self.process = h.ProcessGroup(
            [binary, "--config", self.config_file, "--log-level", "debug"],
            self.dir / "stdout", self.log_file,
            env=None if env is None else {**os.environ, **env})
        self.returncode = None

    def write_config(self, config):
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2)

    def running(self):
        return self.process.running()

    def log_text(self):
        return self.log_file.read_text(errors="replace") \
            if self.log_file.exists() else ""

    def log_events(self, name):
        """Log lines whose event is name."""
        return [line for line in self.log_text().splitlines()
                if f" {name} " in f" {line} " or line.endswith(f" {name}")]

    def request(self, command, timeout=30, **arguments):
        with ControlConnection(self.socket, timeout) as conn:
            return conn.request(command, **arguments)

    def _answers(self):
        if not self.running():
            raise h.HarnessError("havenoro-relayd exited:\n" +
                                 self.log_text())
        try:
            status = self.request("status-get", timeout=5)
        except OSError:
            return None
        return status["arguments"].get("last_apply") is not None

    def wait_ready(self, timeout=60):
        """Waits until the socket answers and the first apply is done."""
        h.wait_until(self._answers, timeout, "havenoro-relayd's first apply")

    def status(self):
        return self.request("status-get")["arguments"]

    def applies(self):
        return self.status()["applies"]

    def wait_idle(self, timeout=60):
        """Waits until nothing is queued or being applied.

        An apply in progress shows as queued work only until it starts;
        two equal status documents a settle-time apart mean none ran in
        between.
        """
        def idle():
            first = self.status()
            if first["queued"]:
                return False
            time.sleep(0.3)
            second = self.status()
            return (not second["queued"] and
                    second["applies"] == first["applies"])
        h.wait_until(idle, timeout, "havenoro-relayd to go idle",
                     interval=0.1)

    def signal(self, signo):
        os.kill(self.process.pid, signo)

    def wait(self, timeout=60):
        """Waits for an exit already asked for (a signal sent); returns
        the exit status. A second SIGTERM could meet the daemon after its
        handler is gone, at the very end of its stop."""
        if self.returncode is None:
            self.returncode = self.process.proc.wait(timeout=timeout)
        return self.returncode

    def stop(self, timeout=60):
        """SIGTERM, then waits; returns the exit status."""
        if self.returncode is not None:
            return self.returncode
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                self.returncode = self.process.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.stop()
                raise h.HarnessError("havenoro-relayd ignored SIGTERM")
        else:
            self.returncode = self.process.proc.returncode
        return self.returncode

    def kill(self):
        self.process.stop()

    def ctl(self, *args, timeout=180):
        """Runs havenoro-relayctl --socket <ours> args."""
        return run_ctl("--socket", self.socket, *args, timeout=timeout)


class NotifySocket:
    """What systemd's NOTIFY_SOCKET receives: sd_notify datagrams."""

    def __init__(self, path):
        self.path = Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages = []

    def wait_until(self, predicate, timeout, what):
        """The first datagram, as a dict of its assignments, for which
        predicate is true; it is taken out of the ones kept."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate(message):
                    self.messages.remove(message)
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.HarnessError(f"no {what} from the daemon; got "
                                     f"{self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.append(dict(line.split("=", 1)
                                      for line in data.split("\n") if line))

    def wait_for(self, assignment, timeout):
        """The first datagram holding assignment, e.g. "READY=1"."""
        key, value = assignment.split("=", 1)
        return self.wait_until(lambda m: m.get(key) == value, timeout,
                               assignment)

    def close(self):
        self.sock.close()


def run_ctl(*args, timeout=180):
    """Runs havenoro-relayctl with args; text output."""
    return subprocess.run([str(relayctl_binary()), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
