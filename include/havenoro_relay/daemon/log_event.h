#pragma once

#include "havenoro_relay/util/log_event.h"

namespace havenoro::daemon {

// The daemon's log lines are the library's: one format for every event.
using util::log_value;
using util::LogEvent;

}  // namespace havenoro::daemon
