#!/usr/bin/python3
"""havenoro-relayd demo: a panel's relay settings become Exim's routes.

Builds, in a temporary directory, a panel tree with five mail domains, a
test CA, two relays that require AUTH, an MX sink standing for the
recipients' mail servers, and a private Exim on a loopback port. It runs
`havenoro-relayd --once`, sends one message per domain through Exim, and
prints where each message went, as the relays and the sink recorded it:
nothing in the table is taken from the expectations. Exits 0 when what
was observed matches what the settings call for, 1 otherwise.

Run as root (Exim and the daemon need it): /usr/bin/python3 demo/demo.py
"""

import contextlib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" /
                       "support"))
import harness as h  # noqa: E402

RCPT = "someone@example.net"


def write_panel(panel, starttls, tls):
    """The sample tree: domain -> (user, what it says, user suspended)."""
    panel.write_user("alice")
    panel.write_user("bob")
    panel.write_user("carol", suspended=True)
    panel.write_server_relay(None)
    tree = {}

    suspended_users = {"carol"}

    def domain(user, name, settings, note):
        panel.write_domain(user, name, settings)
        tree[name] = (user, note, user in suspended_users)

    starttls.add_account("apikey", "SG.demo-secret")
    domain("alice", "shop-alice.example", {"smtp_relay": h.relay_settings(
        starttls, username="apikey", password="SG.demo-secret")},
        f"relay {starttls.name}, STARTTLS (security auto)")
    tls.add_account("blog@alice", "p^ss:w{rd}")
    domain("alice", "blog-alice.example", {"smtp_relay": h.relay_settings(
        tls, username="blog@alice", password="p^ss:w{rd}",
        security="tls")}, f"relay {tls.name}, TLS from the first byte")
    domain("bob", "bob.example", {}, "no relay")
    starttls.add_account("carol", "carol-secret")
    domain("carol", "carol.example", {"smtp_relay": h.relay_settings(
        starttls, username="carol", password="carol-secret")},
        f"relay {starttls.name}, but user carol is suspended")
    domain("bob", "broken.example", {"smtp_relay": h.relay_settings(
        starttls, port=70000, username="bob", password="bob-secret")},
        "relay with port 70000")
    return tree


def expected_outcomes(starttls, tls):
    """What the settings call for: domain -> (where, AUTH user)."""
    return {
        "shop-alice.example": (starttls.name, "apikey"),
        "blog-alice.example": (tls.name, "blog@alice"),
        "bob.example": ("mx-sink", None),
        "carol.example": ("mx-sink", None),
        "broken.example": ("mx-sink", None),
    }


def rejection(stderr, domain):
    """havenoro-relayd's reason for refusing a domain, or None."""
    for line in stderr.splitlines():
        if f"domain '{domain}'" in line and "warning" not in line:
            m = re.search(r"\): (.*)$", line)
            return m.group(1) if m else line
    return None


def observe(domain, sent, relays, exim, stderr, suspended):
    """(where, AUTH user, description) from what was actually recorded."""
    token, msgid = sent
    for relay in relays:
        for record in relay.messages_with(token):
            if relay.name == "mx-sink":
                direct = "went out directly (MX sink)"
                reason = rejection(stderr, domain)
                if reason:
                    why = (f"rejected by havenoro-relayd ({reason}): not "
                           f"relayed, {direct}")
                elif suspended:
                    why = f"suspended: not relayed, {direct}"
                else:
                    why = f"no relay: {direct}"
                return ("mx-sink", None, why)
            mode = {"starttls": "STARTTLS",
                    "implicit": "TLS from the first byte"}.get(
                        record["tls_mode"], "no TLS")
            user = (record["username"] or b"").decode("utf-8", "replace")
            return (relay.name, user,
                    f"relayed via {relay.name} (127.0.0.1:{relay.port}, "
                    f"{mode}) as AUTH {record['auth_mechanism']} user "
                    f"'{user}'")
    outcome = exim.delivery(msgid)
    kind = {"==": "deferred", "**": "bounced", "frozen": "frozen"}.get(
        outcome[0] if outcome else None, "no outcome")
    return (None, None, f"{kind}: arrived nowhere")


def print_table(rows):
    width = max(len(r[0]) for r in rows)
    print(f"\n{'sender domain'.ljust(width)} | outcome")
    print(f"{'-' * width}-+-{'-' * 60}")
    for name, text in rows:
        print(f"{name.ljust(width)} | {text}")


def run(work, stack):
    binary = h.relayd_binary()
    ca = h.TestCA(work / "ca")
    sink = stack.enter_context(h.Relay(work, "mx-sink", mode="plain",
                                       mechanisms=""))
    starttls = stack.enter_context(h.Relay(work, "relay-starttls", ca=ca,
                                           check_accounts=True))
    tls = stack.enter_context(h.Relay(work, "relay-tls", mode="tls", ca=ca,
                                      check_accounts=True))
    relays = [starttls, tls, sink]
    panel = h.PanelTree(work / "panel")
    tree = write_panel(panel, starttls, tls)
    exim = stack.enter_context(h.EximInstance(work, work / "relay-out",
                                              sink.port))
    exim.start()
    print(f"Exim on 127.0.0.1:{exim.port}; relays {starttls.name} on "
          f"{starttls.port} (STARTTLS), {tls.name} on {tls.port} (TLS); "
          f"MX sink on {sink.port}.\n")
    for name, (user, note, _) in tree.items():
        print(f"  panel: {name:20} (user {user}): {note}")

    print("\n$ havenoro-relayd --config relayd.json --once")
    cp = h.run_relayd(binary, h.relayd_config(panel, exim, ca), work)
    for line in (cp.stdout + cp.stderr).splitlines():
        print(f"  {line}")
    print(f"  (exit status {cp.returncode})")

    sent = {}
    for name in tree:
        sender = f"info@{name}"
        token = f"havenoro-demo-{name}"
        sent[name] = (token, exim.send(sender, RCPT, f"{token}: hello"))
    for _, msgid in sent.values():
        exim.wait_delivery(msgid, timeout=30)

    observed = {name: observe(name, sent[name], relays, exim, cp.stderr,
                              tree[name][2])
                for name in tree}
    print_table([(name, obs[2]) for name, obs in observed.items()])

    expected = expected_outcomes(starttls, tls)
    wrong = [name for name in tree
             if observed[name][:2] != expected[name]]
    if cp.returncode != 1 or rejection(cp.stderr, "broken.example") is None:
        wrong.append("havenoro-relayd (expected exit 1 for broken.example)")
    if wrong:
        print(f"\nNOT AS EXPECTED: {', '.join(wrong)}")
        return 1
    print("\nEvery message went where its settings say.")
    return 0


def main():
    work = h.make_workdir("havenoro-demo-")
    with contextlib.ExitStack() as stack:
        stack.callback(h.remove_tree, work)
        try:
            return run(work, stack)
        except h.HarnessError as e:
            print(f"demo: {e}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
