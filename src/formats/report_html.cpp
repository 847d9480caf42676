// Stability report writers. Numbers are rounded to 5 significant digits: the reports are read
// by people and committed, and more digits would only grow them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "svoo/report.hpp"

namespace svoo {
namespace {

double r5(double v) {
  if (!std::isfinite(v)) return v;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.5g", v);
  return std::stod(buf);
}

nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(r5(v)) : nlohmann::json(nullptr); }
nlohmann::json opt(const std::optional<double>& v) { return v ? num(*v) : nlohmann::json(nullptr); }

nlohmann::json spread_json(const Spread& s) {
  return {{"mean", num(s.mean)},          {"std_inputs", opt(s.std_inputs)}, {"cv_inputs", opt(s.cv_inputs)},
          {"std_steps", num(s.std_steps)}, {"cv_steps", num(s.cv_steps)}};
}

nlohmann::json rounded(const std::vector<double>& v) {
  nlohmann::json a = nlohmann::json::array();
  for (double x : v) a.push_back(num(x));
  return a;
}

std::string f(double v, const char* spec = "%.4g") {
  char buf[48];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

// A perceptually ordered ramp (dark blue -> teal -> yellow), t in [0, 1].
std::string color(double t) {
  static const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * 4.0;
  const int i = std::min(3, static_cast<int>(t));
  const double u = t - i;
  char buf[8];
  int rgb[3];
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<int>(std::lround(stops[i][c] + u * (stops[i + 1][c] - stops[i][c])));
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
  return buf;
}

std::string heatmap(const StabilityReport& r) {
  const double cw = std::clamp(640.0 / r.heads, 4.0, 24.0), ch = std::clamp(480.0 / r.layers, 4.0, 18.0);
  const double x0 = 50, y0 = 20, w = x0 + cw * r.heads + 90, h = y0 + ch * r.layers + 40;
  double lo = 1, hi = 0;
  for (const auto& s : r.per_layer_head) lo = std::min(lo, s.mean), hi = std::max(hi, s.mean);
  const double span = hi > lo ? hi - lo : 1;
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + f(w, "%.0f") + "\" height=\"" + f(h, "%.0f") +
                  "\" font-size=\"11\">";
  for (int l = 0; l < r.layers; ++l)
    for (int hd = 0; hd < r.heads; ++hd) {
      const double m = r.per_layer_head[l * r.heads + hd].mean;
      o += "<rect x=\"" + f(x0 + hd * cw, "%.1f") + "\" y=\"" + f(y0 + l * ch, "%.1f") + "\" width=\"" + f(cw, "%.1f") +
           "\" height=\"" + f(ch, "%.1f") + "\" fill=\"" + color((m - lo) / span) + "\"><title>L" + std::to_string(l) +
           " H" + std::to_string(hd) + " " + f(m, "%.3f") + "</title></rect>";
    }
  const int lstep = std::max(1, r.layers / 10), hstep = std::max(1, r.heads / 10);
  for (int l = 0; l < r.layers; l += lstep)
    o += "<text x=\"" + f(x0 - 4, "%.0f") + "\" y=\"" + f(y0 + (l + 0.8) * ch, "%.1f") + "\" text-anchor=\"end\">" +
         std::to_string(l) + "</text>";
  for (int hd = 0; hd < r.heads; hd += hstep)
    o += "<text x=\"" + f(x0 + (hd + 0.5) * cw, "%.1f") + "\" y=\"" + f(y0 + r.layers * ch + 14, "%.1f") +
         "\" text-anchor=\"middle\">" + std::to_string(hd) + "</text>";
  o += "<text x=\"" + f(x0 + r.heads * cw / 2, "%.0f") + "\" y=\"" + f(h - 6, "%.0f") +
       "\" text-anchor=\"middle\">head</text><text x=\"12\" y=\"" + f(y0 - 6, "%.0f") + "\">layer</text>";
  const double lx = x0 + cw * r.heads + 20;
  for (int i = 0; i < 20; ++i)
    o += "<rect x=\"" + f(lx, "%.0f") + "\" y=\"" + f(y0 + (19 - i) * 10, "%.0f") + "\" width=\"14\" height=\"10\" fill=\"" +
         color(i / 19.0) + "\"/>";
  o += "<text x=\"" + f(lx + 18, "%.0f") + "\" y=\"" + f(y0 + 9, "%.0f") + "\">" + f(hi, "%.3f") + "</text>";
  o += "<text x=\"" + f(lx + 18, "%.0f") + "\" y=\"" + f(y0 + 200, "%.0f") + "\">" + f(lo, "%.3f") + "</text>";
  return o + "</svg>";
}

// Axes frame with y ticks from 0 to ymax.
std::string frame(double x0, double y0, double pw, double ph, double ymax, const std::string& xlabel) {
  std::string o;
  o += "<line x1=\"" + f(x0) + "\" y1=\"" + f(y0 + ph) + "\" x2=\"" + f(x0 + pw) + "\" y2=\"" + f(y0 + ph) + "\" stroke=\"#444\"/>";
  o += "<line x1=\"" + f(x0) + "\" y1=\"" + f(y0) + "\" x2=\"" + f(x0) + "\" y2=\"" + f(y0 + ph) + "\" stroke=\"#444\"/>";
  for (int t = 0; t <= 4; ++t) {
    const double y = y0 + ph - ph * t / 4.0;
    o += "<text x=\"" + f(x0 - 4) + "\" y=\"" + f(y + 4) + "\" text-anchor=\"end\">" + f(ymax * t / 4.0, "%.3f") + "</text>";
    o += "<line x1=\"" + f(x0) + "\" y1=\"" + f(y) + "\" x2=\"" + f(x0 + pw) + "\" y2=\"" + f(y) + "\" stroke=\"#ddd\"/>";
  }
  o += "<text x=\"" + f(x0 + pw / 2) + "\" y=\"" + f(y0 + ph + 30) + "\" text-anchor=\"middle\">" + xlabel + "</text>";
  return o;
}

std::string layer_bars(const StabilityReport& r) {
  const bool inputs = r.inputs >= 2;
  const double x0 = 55, y0 = 10, pw = 700, ph = 220, bw = pw / r.layers;
  double ymax = 0;
  for (const auto& s : r.per_layer) ymax = std::max(ymax, s.mean + (inputs ? *s.std_inputs : s.std_steps));
  ymax = ymax > 0 ? ymax * 1.05 : 1;
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"780\" height=\"275\" font-size=\"11\">";
  o += frame(x0, y0, pw, ph, ymax, "layer");
  const auto Y = [&](double v) { return y0 + ph - ph * std::max(0.0, v) / ymax; };
  for (int l = 0; l < r.layers; ++l) {
    const Spread& s = r.per_layer[l];
    const double e = inputs ? *s.std_inputs : s.std_steps, x = x0 + l * bw;
    o += "<rect x=\"" + f(x + bw * 0.15) + "\" y=\"" + f(Y(s.mean)) + "\" width=\"" + f(bw * 0.7) + "\" height=\"" +
         f(y0 + ph - Y(s.mean)) + "\" fill=\"#5b8fd0\"><title>layer " + std::to_string(l) + ": " + f(s.mean, "%.4f") +
         " +- " + f(e, "%.4f") + "</title></rect>";
    o += "<line x1=\"" + f(x + bw / 2) + "\" y1=\"" + f(Y(s.mean - e)) + "\" x2=\"" + f(x + bw / 2) + "\" y2=\"" +
         f(Y(s.mean + e)) + "\" stroke=\"#222\"/>";
  }
  const int lstep = std::max(1, r.layers / 15);
  for (int l = 0; l < r.layers; l += lstep)
    o += "<text x=\"" + f(x0 + (l + 0.5) * bw) + "\" y=\"" + f(y0 + ph + 13) + "\" text-anchor=\"middle\">" +
         std::to_string(l) + "</text>";
  return o + "</svg>";
}

std::string step_plot(const StabilityReport& r) {
  const double x0 = 55, y0 = 10, pw = 700, ph = 220;
  double ymax = 0;
  for (double v : r.step_hi) ymax = std::max(ymax, v);
  for (double v : r.step_layer_mean) ymax = std::max(ymax, v);
  ymax = ymax > 0 ? ymax * 1.05 : 1;
  const auto X = [&](int s) { return x0 + (r.steps > 1 ? pw * (s - 1) / (r.steps - 1.0) : pw / 2); };
  const auto Y = [&](double v) { return y0 + ph - ph * std::clamp(v, 0.0, ymax) / ymax; };
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"780\" height=\"275\" font-size=\"11\">";
  o += frame(x0, y0, pw, ph, ymax, "denoising step");
  std::string band = "<polygon fill=\"#f4a261\" fill-opacity=\"0.3\" points=\"";
  for (int s = 1; s <= r.steps; ++s) band += f(X(s)) + "," + f(Y(r.step_hi[s - 1])) + " ";
  for (int s = r.steps; s >= 1; --s) band += f(X(s)) + "," + f(Y(r.step_lo[s - 1])) + " ";
  o += band + "\"/>";
  for (int l = 0; l < r.layers; ++l) {
    o += "<polyline fill=\"none\" stroke=\"#7a9cc6\" stroke-opacity=\"0.5\" stroke-width=\"0.8\" points=\"";
    for (int s = 1; s <= r.steps; ++s) o += f(X(s)) + "," + f(Y(r.step_layer_mean[(s - 1) * r.layers + l])) + " ";
    o += "\"><title>layer " + std::to_string(l) + "</title></polyline>";
  }
  o += "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2.5\" points=\"";
  for (int s = 1; s <= r.steps; ++s) o += f(X(s)) + "," + f(Y(r.step_mean[s - 1])) + " ";
  o += "\"/>";
  const int sstep = std::max(1, r.steps / 10);
  for (int s = 1; s <= r.steps; s += sstep)
    o += "<text x=\"" + f(X(s)) + "\" y=\"" + f(y0 + ph + 13) + "\" text-anchor=\"middle\">" + std::to_string(s) + "</text>";
  return o + "</svg>";
}

std::string row(const std::string& k, const std::string& v) { return "<tr><th>" + k + "</th><td>" + v + "</td></tr>"; }

}  // namespace

std::string format_report_json(const StabilityReport& r) {
  nlohmann::json j;
  j["grid"] = {{"steps", r.steps}, {"layers", r.layers}, {"heads", r.heads}};
  j["inputs"] = r.inputs;
  j["per_input_values"] = r.per_input;
  j["sources"] = r.sources;
  j["density"] = {{"mean", num(r.mean_density)}, {"min_entry", num(r.min_density)}, {"max_entry", num(r.max_density)}};
  j["spread"] = {{"std_across_layers", num(r.std_across_layers)},
                 {"std_across_steps", num(r.std_across_steps)},
                 {"std_across_heads_within_layer", num(r.std_across_heads)},
                 {"mean_within_entry_std_across_inputs", opt(r.within_std)}};
  if (r.anova)
    j["variance"] = {{"groups", r.anova->groups},  {"k", r.anova->k},           {"msb", num(r.anova->msb)},
                     {"msw", num(r.anova->msw)},   {"icc1", num(r.anova->icc)}, {"between_entry_share", num(r.anova->between_share)}};
  else
    j["variance"] = nullptr;
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& p : r.pairs) pairs.push_back({{"a", p.a}, {"b", p.b}, {"spearman", num(p.spearman)}});
  j["pairwise_spearman"] = pairs;
  j["verdict"] = {{"question", "is the spread across inputs small against the spread across layers?"},
                  {"answer", r.stable ? (*r.stable ? "YES" : "NO") : "UNDECIDED"},
                  {"within_std", opt(r.within_std)},
                  {"std_across_layers", num(r.std_across_layers)},
                  {"ratio", opt(r.ratio)},
                  {"threshold", kStableRatio}};
  j["notes"] = r.notes;
  nlohmann::json layers = nlohmann::json::array(), heads = nlohmann::json::array();
  for (const auto& s : r.per_layer) layers.push_back(spread_json(s));
  for (int l = 0; l < r.layers; ++l) {
    nlohmann::json row = nlohmann::json::array();
    for (int h = 0; h < r.heads; ++h) {
      const Spread& s = r.per_layer_head[l * r.heads + h];
      // Compact [mean, std_steps, std_inputs]: this table is the bulk of the file.
      row.push_back({num(s.mean), num(s.std_steps), opt(s.std_inputs)});
    }
    heads.push_back(row);
  }
  j["per_layer"] = layers;
  j["per_layer_head"] = {{"columns", {"mean", "std_steps", "std_inputs"}}, {"rows_are_layers", heads}};
  j["step_mean"] = rounded(r.step_mean);
  return j.dump(1) + "\n";
}

std::string format_report_html(const StabilityReport& r, const std::string& title) {
  const bool multi = r.inputs >= 2;
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape(title) +
      "</title><style>body{font-family:sans-serif;max-width:900px;margin:1em auto;color:#222}"
      "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
      ".verdict{font-size:1.3em;padding:.5em;border:2px solid #888;background:#f7f7f7}figcaption{font-size:.9em;color:#555}"
      "</style></head><body>\n<h1>" + escape(title) + "</h1>\n";
  o += "<p>" + std::to_string(r.steps) + " steps x " + std::to_string(r.layers) + " layers x " + std::to_string(r.heads) +
       " heads; " + std::to_string(r.inputs) + " input(s)" +
       (multi ? (r.per_input ? " (per-input values)" : " (per-entry statistics only)") : "") + ". Sources: ";
  for (std::size_t i = 0; i < r.sources.size(); ++i) o += (i ? ", " : "") + ("<code>" + escape(r.sources[i]) + "</code>");
  o += "</p>\n<div class=\"verdict\">Input stability: <b>";
  if (r.stable)
    o += std::string(*r.stable ? "YES" : "NO") + "</b> &mdash; mean within-entry std across inputs " + f(*r.within_std) +
         " vs std across layers " + f(r.std_across_layers) + ", ratio " + f(*r.ratio) + " (stable when &lt; " +
         f(kStableRatio) + ")";
  else
    o += "cannot be decided</b>" + std::string(multi ? "" : " from one input");
  o += "</div>\n<ul>";
  for (const auto& n : r.notes) o += "<li>" + escape(n) + "</li>";
  o += "</ul>\n<p>Threshold: the inputs count as stable when their spread is under a quarter of the layer-to-layer "
       "spread, i.e. input noise carries under 1/16 of the layer variance, so one input's profile sizes and orders "
       "layers about as any other input would.</p>\n<h2>Numbers</h2><table>";
  o += row("mean density", f(r.mean_density));
  o += row("sparsest / densest entry (mean over inputs)", f(r.min_density) + " / " + f(r.max_density));
  o += row("std of per-layer means", f(r.std_across_layers));
  o += row("std of per-step means", f(r.std_across_steps));
  o += row("std of head means within a layer (mean over layers)", f(r.std_across_heads));
  if (r.within_std) o += row("mean within-entry std across inputs", f(*r.within_std));
  if (r.anova) {
    o += row("ICC(1), groups = (step, layer, head), k = " + std::to_string(r.anova->k), f(r.anova->icc));
    o += row("between-entry share of variance", f(r.anova->between_share));
    o += row("MSB / MSW", f(r.anova->msb) + " / " + f(r.anova->msw));
  }
  o += "</table>\n";
  if (!r.pairs.empty()) {
    o += "<h2>Spearman rank correlation between inputs</h2><p>Over all (step, layer, head) entries.</p><table><tr><th>inputs</th><th>rho</th></tr>";
    for (const auto& p : r.pairs)
      o += "<tr><td>" + std::to_string(p.a) + " vs " + std::to_string(p.b) + "</td><td>" + f(p.spearman) + "</td></tr>";
    o += "</table>\n";
  }
  o += "<h2>Density by layer and head (mean over steps)</h2><figure>" + heatmap(r) +
       "<figcaption>Color scale from the sparsest to the densest (layer, head).</figcaption></figure>\n";
  o += "<h2>Density per layer</h2><figure>" + layer_bars(r) + "<figcaption>Bars: mean over steps and heads. Error bars: " +
       std::string(multi ? "mean within-entry std across inputs." : "std across steps (one input: no input spread).") +
       "</figcaption></figure>\n";
  o += "<h2>Density against step</h2><figure>" + step_plot(r) +
       "<figcaption>Red: mean over layers and heads. Blue: one line per layer (mean over heads). Band: " +
       std::string(multi ? "mean +- mean within-entry std across inputs." : "min to max over layers.") +
       "</figcaption></figure>\n";
  o += "<h2>Per layer</h2><table><tr><th>layer</th><th>mean</th><th>std inputs</th><th>CV inputs</th><th>std steps</th><th>CV steps</th></tr>";
  for (int l = 0; l < r.layers; ++l) {
    const Spread& s = r.per_layer[l];
    o += "<tr><td>" + std::to_string(l) + "</td><td>" + f(s.mean) + "</td><td>" + (s.std_inputs ? f(*s.std_inputs) : "-") +
         "</td><td>" + (s.cv_inputs ? f(*s.cv_inputs) : "-") + "</td><td>" + f(s.std_steps) + "</td><td>" + f(s.cv_steps) +
         "</td></tr>";
  }
  o += "</table>\n<p>Per (layer, head) values are in report.json.</p></body></html>\n";
  return o;
}

}  // namespace svoo
