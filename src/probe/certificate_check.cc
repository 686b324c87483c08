#include "certificate_check.h"

#include <fmt/format.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdexcept>

namespace havenoro::probe {
namespace {

namespace ssl = boost::asio::ssl;

std::string name_text(const X509_NAME* name) {
  if (!name) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) return "";
  // RFC 2253 escapes bytes outside ASCII, so the text is safe to show.
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<size_t>(size));
  BIO_free(bio);
  return text;
}

std::string ca_text(const std::string& ca_certificates) {
  if (ca_certificates == "system") return "the system CA store";
  return fmt::format("CA file '{}'", ca_certificates);
}

std::string verify_detail(const CertificateCheck& check,
                          const std::string& ca_certificates) {
  std::string found = check.passed()
                          ? "it chains to " + ca_text(ca_certificates)
                      : check.problem().empty() ? "it was not checked"
                                                : check.problem();
  if (check.enforced())
    return (check.passed() ? "verified: " : "not verified: ") + found;
  if (check.passed() || check.problem().empty())
    return "not verified (verify_certificate is off); " + found;
  return "not verified (verify_certificate is off); a check would fail: " +
         found;
}

}  // namespace

bool CertificateCheck::verify(bool preverified, ssl::verify_context& context) {
  X509_STORE_CTX* store = context.native_handle();
  if (subject_.empty()) {
    X509* leaf = X509_STORE_CTX_get0_cert(store);
    subject_ = name_text(leaf ? X509_get_subject_name(leaf) : nullptr);
    issuer_ = name_text(leaf ? X509_get_issuer_name(leaf) : nullptr);
  }

  int depth = X509_STORE_CTX_get_error_depth(store);
  if (!preverified) {
    int error = X509_STORE_CTX_get_error(store);
    note_problem(X509_verify_cert_error_string(error));
  } else if (depth == 0 && !ssl::host_name_verification(host_)(true, context)) {
    // host_name_verification only answers; setting the error makes
    // OpenSSL's alert and verify result say what went wrong.
    X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
    name_mismatch_ = true;
    note_problem(fmt::format("the certificate is not issued for '{}'", host_));
  }
  if (depth == 0) reached_leaf_ = true;
  return !enforce_ || problem_.empty();
}

void CertificateCheck::note_problem(std::string problem) {
  if (problem_.empty()) problem_ = std::move(problem);
}

std::unique_ptr<ssl::context> make_tls_context(
    const std::string& ca_certificates) {
  auto context = std::make_unique<ssl::context>(ssl::context::tls_client);
  boost::system::error_code error;
  if (ca_certificates == "system")
    context->set_default_verify_paths(error);
  else
    context->load_verify_file(ca_certificates, error);
  if (error) {
    throw std::runtime_error(fmt::format(
        "cannot read {}: {}", ca_text(ca_certificates), error.message()));
  }
  return context;
}

TlsInfo describe_tls(SSL* ssl, const CertificateCheck& check, std::string mode,
                     const std::string& ca_certificates) {
  TlsInfo info;
  info.mode = std::move(mode);
  if (ssl && SSL_is_init_finished(ssl)) {
    info.protocol = SSL_get_version(ssl);
    info.cipher = SSL_get_cipher_name(ssl);
  }
  info.subject = check.subject();
  info.issuer = check.issuer();
  info.verified = check.enforced() && check.passed();
  info.verify_detail = verify_detail(check, ca_certificates);
  return info;
}

}  // namespace havenoro::probe
