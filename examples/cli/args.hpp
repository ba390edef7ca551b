// Command-line parsing shared by the kadapter subcommands.
#pragma once

#include <charconv>
#include <cstdio>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kadapter/core/error.hpp"

namespace kadapter::cli {

/// Description of one option of a subcommand.
struct OptionSpec {
  std::string name;         // without the leading "--"
  std::string value_name;   // empty for a flag without value
  std::string help;
  bool required = false;
  std::string default_value;
  /// Not empty: the option is not accepted on this command's line (this says why) and not
  /// listed; get() gives the default.
  std::string refused{};
};

/// Parsed "--name value" options of one subcommand; every error names the option.
class Args {
 public:
  Args(std::string command, std::vector<OptionSpec> specs, const std::vector<std::string>& argv)
      : command_(std::move(command)), specs_(std::move(specs)) {
    for (std::size_t i = 0; i < argv.size(); ++i) {
      const std::string& a = argv[i];
      if (a == "--help" || a == "-h") {
        help_ = true;
        continue;
      }
      if (a.rfind("--", 0) != 0)
        throw Error(command_ + ": unexpected argument '" + a + "' (options start with --)");
      std::string name = a.substr(2), value;
      const auto eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      const OptionSpec* spec = find(name);
      if (!spec) throw Error(command_ + ": unknown option --" + name + "\n" + usage());
      if (!spec->refused.empty()) throw Error(command_ + ": --" + name + " " + spec->refused);
      if (spec->value_name.empty()) {
        if (eq != std::string::npos)
          throw Error(command_ + ": option --" + name + " takes no value (given --" + name + "=" + value +
                      "; leave the flag out to turn it off)");
        values_[name] = "1";
        continue;
      }
      if (eq == std::string::npos) {
        if (i + 1 >= argv.size()) throw Error(command_ + ": option --" + name + " needs a value (" + spec->value_name + ")");
        value = argv[++i];
      }
      if (values_.count(name)) throw Error(command_ + ": option --" + name + " given twice");
      values_[name] = value;
    }
    // Under --resume the run's own record may still supply them: the command checks then.
    if (!help_ && !values_.count("resume")) require();
  }

  /// Throws for a required option that has no value.
  void require() const {
    for (const auto& s : specs_)
      if (s.required && s.refused.empty() && !values_.count(s.name))
        throw Error(command_ + ": missing required option --" + s.name + " " + s.value_name + "\n" + usage());
  }

  bool help() const noexcept { return help_; }
  /// Give --name the value @p value, read from @p source, unless the command line gave it one;
  /// errors about the value then name the source.
  void fill(const std::string& name, std::string value, std::string source) {
    if (values_.count(name)) return;
    values_[name] = std::move(value);
    sources_[name] = std::move(source);
  }
  /// The subcommand (for error messages: "pretrain: --flag ...").
  const std::string& command() const noexcept { return command_; }
  /// The options this command accepts, in the order of its usage text.
  const std::vector<OptionSpec>& specs() const noexcept { return specs_; }
  bool has(const std::string& name) const { return values_.count(name) > 0; }

  std::string get(const std::string& name) const {
    auto it = values_.find(name);
    if (it != values_.end()) return it->second;
    const OptionSpec* s = find(name);
    return s ? s->default_value : std::string();
  }

  /// The value of --name, which must be one of @p choices.
  std::string choice(const std::string& name, const std::set<std::string>& choices) const {
    const std::string v = get(name);
    if (!choices.count(v)) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
      throw Error(command_ + ": --" + name + " '" + v + "'" + origin(name) + " is not one of: " + list);
    }
    return v;
  }

  /// The value of --name as an integer within [lo, hi].
  long long integer(const std::string& name, long long lo, long long hi) const {
    const std::string v = get(name);
    long long x = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec != std::errc() || p != v.data() + v.size() || x < lo || x > hi)
      throw Error(command_ + ": --" + name + " '" + v + "'" + origin(name) + " is not an integer in [" +
                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }

  static std::string format(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
  }

  /// The value of --name as a finite number.
  double number(const std::string& name) const {
    const std::string v = get(name);
    double x = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec != std::errc() || p != v.data() + v.size() || !std::isfinite(x))
      throw Error(command_ + ": --" + name + " '" + v + "'" + origin(name) + " is not a number");
    return x;
  }

  /// The value of --name as a finite number in [lo, hi] (or [lo, hi) when @p hi_open).
  double number(const std::string& name, double lo, double hi, bool hi_open = false) const {
    const double x = number(name);
    if (x < lo || x > hi || (hi_open && x == hi))
      throw Error(command_ + ": --" + name + " '" + get(name) + "'" + origin(name) + " is not a number in [" + format(lo) + ", " +
                  format(hi) + (hi_open ? ")" : "]"));
    return x;
  }

  /// The value of --name as a comma-separated list of non-negative integers.
  std::vector<long long> integer_list(const std::string& name) const {
    std::vector<long long> out;
    const std::string v = get(name);
    std::size_t start = 0;
    while (start <= v.size()) {
      const std::size_t end = std::min(v.find(',', start), v.size());
      const std::string item = v.substr(start, end - start);
      long long x = 0;
      auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), x);
      if (item.empty() || ec != std::errc() || p != item.data() + item.size() || x < 0)
        throw Error(command_ + ": --" + name + " '" + v + "'" + origin(name) +
                    " is not a comma-separated list of non-negative integers");
      out.push_back(x);
      start = end + 1;
    }
    return out;
  }

  std::string usage() const {
    std::string u = "usage: kadapter " + command_;
    for (const auto& s : specs_) {
      if (!s.refused.empty()) continue;
      std::string part = "--" + s.name + (s.value_name.empty() ? "" : " " + s.value_name);
      u += s.required ? " " + part : " [" + part + "]";
    }
    u += "\n";
    for (const auto& s : specs_) {
      if (!s.refused.empty()) continue;
      u += "  --" + s.name + (s.value_name.empty() ? "" : " " + s.value_name) + "\n      " + s.help;
      if (!s.default_value.empty()) u += " (default: " + s.default_value + ")";
      u += "\n";
    }
    return u;
  }

 private:
  /// " (from FILE)" for a value fill() took from a file, else nothing.
  std::string origin(const std::string& name) const {
    const auto it = sources_.find(name);
    return it == sources_.end() ? std::string() : " (from " + it->second + ")";
  }
  const OptionSpec* find(const std::string& name) const {
    for (const auto& s : specs_)
      if (s.name == name) return &s;
    return nullptr;
  }
  std::string command_;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> sources_;  // where fill() took a value from
  bool help_ = false;
};

}  // namespace kadapter::cli
