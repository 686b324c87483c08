"""Pieces for the apply-safety tests: kills, fault scripts, live-tree checks.

harness.py runs the real parts; this module adds what a test needs to
interrupt them and to judge what was left behind: a havenoro-relayd run
that is killed with SIGKILL after a chosen delay, shell scripts that stand
in for `systemctl reload exim4` and `systemctl restart exim4` (one kills
the Exim daemon, one starts it again detached, as systemd would), and
checks of the output directory as Exim reads it.
"""

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import harness as h

# The keys of a credential file, in the order docs/configuration.md shows.
CREDENTIAL_KEYS = ("route", "transport", "tls", "verify", "auth", "username",
                   "password")
GENERATION_FILES = ("generation.conf", "routers.conf", "transports.conf",
                    "authenticators.conf")


def write_config(config, path):
    """Writes a daemon configuration (0600: it names no secret, but the
    daemon's own files are root's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    return Path(path)


def run_killed(binary, config_path, delay_s, timeout=60):
    """Runs `havenoro-relayd --config F --once` and SIGKILLs it after delay_s.

    The daemon runs in its own session and the whole group is killed, so
    its Exim children (checks, probes) die with it, as under systemd's
    KillMode=control-group. Returns the exit status if the run finished
    before the kill, else None.
    """
    proc = subprocess.Popen([str(binary), "--config", str(config_path),
                             "--once"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay_s)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    return proc.returncode if finished else None


def parse_credential(text):
    """key -> value of a credential file's "key: value" lines."""
    return dict(re.findall(r"^(\w+): ?(.*)$", text, re.M))


def decoded(fields, key):
    """A base64 field of a credential file as text."""
    return base64.b64decode(fields[key], validate=True).decode("utf-8")


# The candidate tree's own directories stay from one apply to the next,
# empty; anything in them is a leftover. So does the lock file that lets
# one applier at a time work on the directory (never removed).
KEPT_SCRATCH = {".candidate", ".candidate/domains", ".candidate/suspended",
                ".candidate/dkim", ".candidate/default", ".lock"}


def dot_entries(output_dir):
    """Leftovers of an interrupted apply, relative to output_dir: names
    starting with a dot anywhere under it, and whatever is in the kept
    candidate tree; not the kept scratch directories and lock file."""
    out = []
    for dirpath, dirnames, filenames in os.walk(output_dir):
        for name in dirnames + filenames:
            rel = str((Path(dirpath) / name).relative_to(output_dir))
            if rel in KEPT_SCRATCH:
                continue
            if name.startswith(".") or rel.startswith(".candidate/"):
                out.append(rel)
    return sorted(out)


def _check_credential(path, rel):
    """Problems with one credential file Exim may read right now."""
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        return [f"{rel}: not a regular file"]
    text = path.read_text(encoding="utf-8", errors="replace")
    problems = []
    if not text.endswith("\n"):
        problems.append(f"{rel}: does not end with a newline")
    fields = parse_credential(text)
    missing = [k for k in CREDENTIAL_KEYS if k not in fields]
    if missing:
        problems.append(f"{rel}: missing {missing}")
    for key in ("username", "password"):
        if key in fields:
            try:
                decoded(fields, key)
            except ValueError:
                problems.append(f"{rel}: {key} is not base64 of UTF-8")
    return problems


def _check_current(output_dir):
    current = output_dir / "current"
    if not current.is_symlink():
        return ["current is not a symlink"]
    target = os.readlink(current)
    if not re.fullmatch(r"generations/\d+", target):
        return [f"current -> {target!r}: not generations/<N>"]
    gen = output_dir / target
    problems = [f"current -> {target}: {name} missing"
                for name in GENERATION_FILES
                if not (gen / name).is_file() or (gen / name).is_symlink()]
    if not problems:
        text = (gen / "generation.conf").read_text()
        if f"HAVENORO_GENERATION = {gen}\n" not in text:
            problems.append(f"{target}/generation.conf does not pin {gen}")
    return problems


def incomplete_generations(output_dir):
    """generations/<N> -> the snippet files it lacks, for each kept
    generation that is not whole (not live; a rollback could pick it)."""
    gens = Path(output_dir) / "generations"
    out = {}
    for name in sorted(os.listdir(gens)) if gens.is_dir() else []:
        if name.startswith("."):
            continue
        missing = [f for f in GENERATION_FILES
                   if not (gens / name / f).is_file()]
        if missing:
            out[name] = missing
    return out


def live_problems(output_dir):
    """What is wrong with the output directory as Exim sees it.

    Exim reads current/ (through generation.conf), domains/<d>/ as found
    by dsearch (which never returns a name starting with a dot: no sender
    domain has one), default/smtp_relay.conf and suspended/<d>. Every such
    file must be whole; entries named with a leading dot are not live.
    """
    output_dir = Path(output_dir)
    problems = _check_current(output_dir)
    domains = output_dir / "domains"
    for entry in sorted(os.listdir(domains)) if domains.is_dir() else []:
        if entry.startswith("."):
            continue
        path = domains / entry
        if path.is_symlink() or not path.is_dir():
            problems.append(f"domains/{entry}: not a directory")
            continue
        conf = path / "smtp_relay.conf"
        if not conf.exists():
            problems.append(f"domains/{entry}: no smtp_relay.conf")
            continue
        problems += _check_credential(conf, f"domains/{entry}/"
                                      "smtp_relay.conf")
    default = output_dir / "default" / "smtp_relay.conf"
    if default.exists() or default.is_symlink():
        problems += _check_credential(default, "default/smtp_relay.conf")
    return problems


def file_inventory(tree):
    """path -> (inode, mtime_ns) of every entry under tree, links unread."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(tree))] = (st.st_ino, st.st_mtime_ns)
    return out


def live_view(tree, current, dot_entries=True):
    """What Exim reads: bytes and link targets outside generations/ and in
    the generation named current; without dot_entries, leaving out every
    path with a dot-named part (temporaries, which Exim never reads)."""
    def wanted(path, kind):
        if kind == "dir":
            return False
        if not dot_entries and any(part.startswith(".")
                                   for part in path.split("/")):
            return False
        return (not path.startswith("generations/")
                or path.startswith(current + "/"))
    return {path: (kind, content)
            for path, (kind, _, _, content) in h.snapshot(tree).items()
            if wanted(path, kind)}


def remove_dot_entries(tree):
    """Removes every dot-named entry under tree (and what it holds)."""
    for rel in dot_entries(tree):
        path = Path(tree) / rel
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def changed_keys(before, after):
    return sorted(k for k in set(before) | set(after)
                  if before.get(k) != after.get(k))


def copy_templates(work, name):
    """A private copy of exim-templates/ for a test to break."""
    target = Path(work) / f"templates-{name}"
    shutil.copytree(h.TEMPLATES_DIR, target)
    target.chmod(0o755)
    return target


def write_script(path, body):
    """An executable /bin/sh script (the daemon runs commands without a
    shell, so the script carries its own #! line)."""
    path = Path(path)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def exim_kill_script(exim, path):
    """Stands for a reload after which Exim does not come back: kills the
    daemon named by the pid file with SIGKILL and reports success, as a
    reload command does once it has sent its signal."""
    return write_script(path, f"kill -9 \"$(cat '{exim.pid_file}')\"\n"
                        "exit 0\n")


def exim_start_script(exim, path, queue_interval="15s"):
    """Stands for `systemctl restart exim4`: starts the same Exim (same -C
    configuration) as a background daemon and returns at once. -bd forks
    and detaches; the new daemon writes its pid to the same pid file."""
    return write_script(path, f"exec '{h.EXIM}' -C '{exim.config_file}' "
                        f"-bd -q{queue_interval} </dev/null >/dev/null "
                        "2>&1\n")


def is_our_exim(pid, exim):
    """Whether pid runs Exim on exim's configuration (not a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return (len(argv) > 2 and argv[0].endswith(b"exim4")
            and str(exim.config_file).encode() in argv)


def stop_exim_by_pid_file(exim, timeout=10):
    """Stops the Exim daemon named by exim's pid file and its process group,
    if it is that Exim (same -C file): one started by exim_start_script is
    no child of the test, so harness.EximInstance.stop cannot end it."""
    pid = exim.daemon_pid()
    if pid is None or not is_our_exim(pid, exim):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError):
                kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and is_our_exim(pid, exim):
            time.sleep(0.05)
        if not is_our_exim(pid, exim):
            return


def wait_exim_up(exim, old_pid=None, timeout=15):
    """Waits until the pid file names a running Exim (other than old_pid)
    whose port answers with 220; returns its pid."""
    def up():
        pid = exim.daemon_pid()
        if pid is None or pid == old_pid or not is_our_exim(pid, exim):
            return None
        return pid if exim.banner() is not None else None
    return h.wait_until(up, timeout, "Exim daemon to come back")
