#!/bin/bash
# Runs the havenoro-relayd demo on a fresh Debian 12 machine, as root:
# installs what it needs, builds the daemon, then shows a panel's relay
# settings carrying real mail through a private Exim (demo/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run-demo.sh: run as root (Exim and havenoro-relayd need it)" >&2
  exit 1
fi

sh scripts/install-deps.sh
# The build type the tests use: switching between the two would rebuild.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j2
# Debian's python3 has python3-aiosmtpd; another one on PATH may not.
exec /usr/bin/python3 demo/demo.py
