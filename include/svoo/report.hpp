// Writers of the stability report (svoo/stability.hpp): JSON for tools, and one self-contained
// HTML page (inline SVG, no scripts or external assets) for people.
#pragma once

#include <string>

#include "svoo/stability.hpp"

namespace svoo {

std::string format_report_json(const StabilityReport& report);
std::string format_report_html(const StabilityReport& report, const std::string& title);

}  // namespace svoo
