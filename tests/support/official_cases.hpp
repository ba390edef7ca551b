// The committed fixtures of the authors' PyTorch models (tests/fixtures/adapter, made by
// tests/fixtures/make_adapter_fixtures.py): where they are, and the `kadapter grads` request
// that reproduces each. Needs KA_FIXTURE_DIR and the examples/ include directory.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/grads.hpp"

namespace kadapter::test {

/// The fixture directory (tests/fixtures): the environment's KA_FIXTURE_DIR when set (a test
/// program built on one machine and run on another), else the source tree's.
inline std::filesystem::path fixture_dir() {
  if (const char* dir = std::getenv("KA_FIXTURE_DIR"); dir && *dir) return std::filesystem::path(dir);
  return std::filesystem::path(KA_FIXTURE_DIR);
}

/// The request of the case in @p dir, read from its args.json; the backbone is the tiny
/// RoBERTa of the encoder fixtures.
inline cli::GradsRequest request_for(const std::filesystem::path& dir) {
  std::ifstream f(dir / "args.json");
  const nlohmann::json a = nlohmann::json::parse(f);
  cli::GradsRequest r;
  r.model = (fixture_dir() / "encoder" / "tiny_roberta").string();
  r.adapter = (dir / "adapter.safetensors").string();
  r.batch = (dir / "batch.safetensors").string();
  r.task = a.at("task").get<std::string>();
  if (r.task == "qa") r.task = "multiple-choice";
  r.adapter_list = a.at("adapter_list").get<std::vector<long long>>();
  r.heads = a.at("adapter_heads").get<index_t>();
  r.skip = a.value("adapter_skip_layers", 0);
  if (a.contains("fusion") && a["fusion"].is_string()) r.fusion = a["fusion"].get<std::string>();
  if (a.contains("num_choices")) r.choices = a["num_choices"].get<index_t>();
  r.official = a.at("compat").get<std::string>() == "official";
  r.qa_a_rate = a.value("a_rate", 1.0);
  r.qa_b_rate = a.value("b_rate", 1.0);
  return r;
}

/// Every case directory (those with args.json and adapter.safetensors), sorted.
inline std::vector<std::filesystem::path> cases() {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(fixture_dir() / "adapter"))
    if (e.is_directory() && std::filesystem::exists(e.path() / "args.json") &&
        std::filesystem::exists(e.path() / "adapter.safetensors"))
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace kadapter::test
