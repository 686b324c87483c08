#!/usr/bin/python3
"""A test SMTP relay that records what it received.

Runs an aiosmtpd server on a loopback port. It can offer STARTTLS or speak
TLS from the first byte, require AUTH with a chosen set of mechanisms, and
refuse AUTH or MAIL FROM with a chosen reply. Every accepted message is
appended to the record file as one JSON line; credentials are stored base64
encoded so that a test can compare them byte for byte. With --events, every
AUTH attempt is also recorded, so that a test can see a relay was asked even
when it refused (a refused AUTH leaves no message behind).
"""

import argparse
import base64
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def b64(data):
    return base64.b64encode(data).decode("ascii")


def tls_mode(server, session):
    """How the connection is encrypted: "starttls", "implicit" or None.

    aiosmtpd sets session.ssl only after STARTTLS; a connection that spoke
    TLS from the first byte shows only in the transport's ssl_object.
    """
    if session.ssl is not None:
        return "starttls"
    transport = getattr(server, "transport", None)
    if transport is not None and \
            transport.get_extra_info("ssl_object") is not None:
        return "implicit"
    return None


def append_record(lock, path, entry):
    with lock, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


class Recorder:
    """Handler that appends each message to a JSON-lines file."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()

    async def handle_MAIL(self, server, session, envelope, address, options):
        if self.args.mail_reply:
            return self.args.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        auth = session.auth_data
        mode = tls_mode(server, session)
        entry = {
            "relay": self.args.name,
            "tls": mode is not None,
            "tls_mode": mode,
            "auth_mechanism": getattr(session, "havenoro_mechanism", None),
            "username_b64": b64(auth.login) if auth else None,
            "password_b64": b64(auth.password) if auth else None,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        append_record(self.lock, self.args.record, entry)
        return "250 OK queued as test"


class RelaySMTP(SMTP):
    # Long API keys and passwords do not fit aiosmtpd's 512-byte default.
    command_size_limit = 4096

    def _getparams(self, params):
        # RFC 4954 lets an authenticated client name the message's sender
        # with AUTH= on MAIL FROM, and Exim does so for local submissions.
        # Real relays accept it; aiosmtpd 1.4 would answer 555.
        result = super()._getparams(params)
        if result is not None and self.session.authenticated:
            result.pop("AUTH", None)
        return result


def known_account(args, auth_data):
    """Whether --accounts lists this username and password, byte for byte.

    Without --accounts every pair is accepted. The file is read at each
    AUTH, so a test can add accounts while the relay runs.
    """
    if not args.accounts:
        return True
    pair = {"username_b64": b64(auth_data.login),
            "password_b64": b64(auth_data.password)}
    try:
        with open(args.accounts, encoding="utf-8") as f:
            return any(json.loads(line) == pair for line in f
                       if line.strip())
    except FileNotFoundError:
        return False


def make_authenticator(args, lock):
    def authenticate(server, session, envelope, mechanism, auth_data):
        session.havenoro_mechanism = mechanism
        ok = (isinstance(auth_data, LoginPassword) and not args.auth_reply
              and known_account(args, auth_data))
        if args.events:
            is_pair = isinstance(auth_data, LoginPassword)
            append_record(lock, args.events, {
                "relay": args.name,
                "event": "auth",
                "mechanism": mechanism,
                "success": ok,
                "username_b64": b64(auth_data.login) if is_pair else None,
                "password_b64": b64(auth_data.password) if is_pair
                else None,
            })
        if args.auth_reply:
            return AuthResult(success=False, handled=False,
                              message=args.auth_reply)
        if not ok:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data)
    return authenticate


class RelayController(Controller):
    def factory(self):
        return RelaySMTP(self.handler, **self.SMTP_kwargs)


def tls_context(args):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    return ctx


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--mode", choices=["starttls", "tls", "plain"],
                   default="starttls")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--mechanisms", default="PLAIN,LOGIN",
                   help="AUTH mechanisms offered; empty for no AUTH")
    p.add_argument("--auth-reply", help="refuse every AUTH with this reply")
    p.add_argument("--mail-reply", help="refuse MAIL FROM with this reply")
    p.add_argument("--record", required=True)
    p.add_argument("--events", help="also record each AUTH attempt here")
    p.add_argument("--accounts",
                   help="JSON lines of username_b64/password_b64: accept "
                   "only these, as a real relay does (default: accept any)")
    p.add_argument("--ready-file", required=True)
    args = p.parse_args()

    mechanisms = [m for m in args.mechanisms.split(",") if m]
    excluded = [m for m in ("PLAIN", "LOGIN") if m not in mechanisms]
    kwargs = dict(ident="havenoro test relay")
    handler = Recorder(args)
    if mechanisms:
        kwargs.update(authenticator=make_authenticator(args, handler.lock),
                      auth_required=True,
                      # With TLS from the first byte aiosmtpd does not count
                      # the connection as TLS, so it would never offer AUTH.
                      auth_require_tls=(args.mode == "starttls"),
                      auth_exclude_mechanism=excluded)
    ssl_context = None
    if args.mode == "starttls":
        kwargs.update(tls_context=tls_context(args), require_starttls=True)
    elif args.mode == "tls":
        ssl_context = tls_context(args)

    controller = RelayController(handler, hostname=args.host,
                                 port=args.port, ssl_context=ssl_context,
                                 server_hostname="relay.test", **kwargs)
    controller.start()
    with open(args.ready_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(args.ready_file + ".tmp", args.ready_file)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
