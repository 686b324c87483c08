#include "base64.h"

#include <openssl/evp.h>

namespace havenoro::probe {

std::string base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string plain_response(std::string_view username,
                           std::string_view password) {
  std::string message(1, '\0');
  message.append(username);
  message.push_back('\0');
  message.append(password);
  return base64(message);
}

}  // namespace havenoro::probe
