#!/bin/sh
# Installs what havenoro-relayd needs to build, test and run its demo on
# Debian 12. Run as root. Safe to run again.
set -eu
export DEBIAN_FRONTEND=noninteractive
packages="cmake g++ make pkg-config clang-format
  libboost-dev libboost-system-dev nlohmann-json3-dev libspdlog-dev
  libfmt-dev libcli11-dev libkainjow-mustache-dev libsystemd-dev libssl-dev
  libgtest-dev libgmock-dev
  exim4-daemon-heavy python3 python3-aiosmtpd python3-dkim swaks openssl
  ca-certificates util-linux mount systemd"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
fi
