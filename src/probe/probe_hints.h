#pragma once

// What the panel tells the admin to change, one per way a probe fails.
// Tests and the panel match on the leading words, so keep them stable.

namespace havenoro::probe::hint {

inline constexpr const char* kNoSuchHost =
    "the host name does not resolve: check its spelling";
inline constexpr const char* kDnsTimeout =
    "timed out resolving the host name: DNS does not answer";
inline constexpr const char* kNothingListening =
    "nothing listening on that port: check the host and the port";
inline constexpr const char* kConnectTimeout =
    "timed out connecting: a firewall drops the connection, or the host "
    "is down";
inline constexpr const char* kUnreachable =
    "the relay cannot be reached from this server: check the host and "
    "the firewall";
inline constexpr const char* kSpeaksImplicitTls =
    "wrong TLS mode for this port: the relay speaks TLS from the first "
    "byte; set security to \"tls\"";
inline constexpr const char* kSilentServer =
    "wrong TLS mode for this port, or not an SMTP server: it accepted "
    "the connection but sent no banner";
inline constexpr const char* kNotImplicitTls =
    "wrong TLS mode for this port: the relay does not speak TLS from the "
    "first byte; set security to \"starttls\"";
inline constexpr const char* kNoStarttls =
    "the relay does not offer STARTTLS, and the password is never sent "
    "in clear: use the relay's TLS port, or security \"tls\"";
inline constexpr const char* kStarttlsRefused =
    "the relay refused STARTTLS: check the port";
inline constexpr const char* kTlsFailed =
    "the TLS handshake failed: the relay's TLS setup and ours have "
    "nothing in common";
inline constexpr const char* kUntrusted =
    "the relay's certificate is not trusted: give its CA in "
    "tls_ca_certificates, or turn off verify_certificate";
inline constexpr const char* kWrongName =
    "the relay's certificate does not name this host: use the host name "
    "it is issued for, or turn off verify_certificate";
inline constexpr const char* kCaFile =
    "the CA certificates cannot be read: check tls_ca_certificates";
inline constexpr const char* kRefusedUs =
    "the relay refuses this server: it may allow only known addresses";
inline constexpr const char* kNoMechanism =
    "relay offers no AUTH mechanism we support: PLAIN or LOGIN is needed";
inline constexpr const char* kNoAuth =
    "relay offers no AUTH mechanism we support: it offers no AUTH on "
    "this port; remove the username if it accepts this server by address";
inline constexpr const char* kCredentialsRefused =
    "credentials refused: check the username and the password";
inline constexpr const char* kAuthRefused =
    "the relay refused AUTH: its answer says why";
inline constexpr const char* kStrongerAuth =
    "the relay wants a stronger AUTH mechanism or encryption";
inline constexpr const char* kTemporary =
    "the relay failed for now (a 4xx answer): try again later";
inline constexpr const char* kTimedOut =
    "timed out: the relay stopped answering";
inline constexpr const char* kClosed =
    "the relay closed the connection: it may refuse this server";
inline constexpr const char* kNotSmtp =
    "the relay's answer is not SMTP: check the port";

}  // namespace havenoro::probe::hint
