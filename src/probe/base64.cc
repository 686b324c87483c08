#include "base64.h"

#include "havenoro_relay/render/credential_file.h"

namespace havenoro::probe {

std::string plain_response(std::string_view username,
                           std::string_view password) {
  std::string message(1, '\0');
  message.append(username);
  message.push_back('\0');
  message.append(password);
  return render::base64_encode(message);
}

}  // namespace havenoro::probe
