// Text formatting shared by the node's progress line (runtime/trainer.cpp)
// and the log readers (the dashboard's header).
#pragma once

#include <string>

namespace tether {

// "1:02:03" (an hour or more) or "2:03"; "--:--" for negative, NaN or more
// than 10^7 seconds.
std::string format_duration(double seconds);

// printf of one double with format `f` ("%.1f"), as a string.
std::string fmt(const char* f, double v);

}  // namespace tether
