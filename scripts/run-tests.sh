#!/bin/sh
# Builds havenoro-relayd and runs the whole test suite with ctest. Run as
# root on Debian 12: it installs what it needs first, and the integration
# tests start private Exim daemons and relays on loopback ports.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j2
cd build
ctest -j2 --output-on-failure --timeout 600 "$@"
