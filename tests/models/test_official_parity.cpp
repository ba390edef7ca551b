// Parity with the K-Adapter authors' PyTorch models through committed fixtures
// (tests/fixtures/make_adapter_fixtures.py; see tests/fixtures/adapter/README.md): loss,
// logits and every parameter gradient of one forward/backward pass, computed the way
// `kadapter grads` computes them, in fp32 and fp64.
#define BOOST_TEST_MODULE official_parity
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/grads.hpp"
#include "support/compare.hpp"
#include "support/official_cases.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

using test::cases;
using test::request_for;

template <class T>
void check_case(const fs::path& dir, const std::string& prefix, double value_tol, double grad_tol) {
  const auto req = request_for(dir);
  const cli::GradsResult<T> got = cli::compute_grads<T>(req);
  io::SafetensorsFile ref(dir / "expected.safetensors");
  const std::string where = dir.filename().string() + " (" + prefix + ")";

  const auto loss = ref.read<double>(prefix + "loss");
  BOOST_TEST_INFO(where << ": loss " << got.loss << " vs " << loss.at(0));
  BOOST_TEST(std::fabs(static_cast<double>(got.loss) - loss.at(0)) <= value_tol * std::fabs(loss.at(0)));

  const auto logits = ref.read<double>(prefix + "logits");
  BOOST_REQUIRE_EQUAL(logits.size(), got.logits.size());
  const double logit_err = test::max_error_over_max(std::span<const T>(got.logits), std::span<const double>(logits));
  BOOST_TEST_INFO(where << ": logits max error / max " << logit_err);
  BOOST_TEST(logit_err <= value_tol);

  // Each gradient tensor is compared at the scale of its own largest magnitude. Tensors whose
  // exact gradient is zero (the key biases: softmax ignores a shift shared by all keys) hold
  // only rounding noise on both sides; they are compared at the scale of the largest
  // gradient of the model.
  double global = 0;
  for (const auto& g : got.grads)
    for (double v : ref.read<double>(prefix + g.name + ".grad")) global = std::max(global, std::fabs(v));
  std::size_t compared = 0;
  for (const auto& g : got.grads) {
    const std::string name = prefix + g.name + ".grad";
    BOOST_TEST_INFO(where << ": " << name);
    BOOST_REQUIRE(ref.contains(name));
    const auto expected = ref.read<double>(name);
    BOOST_REQUIRE_EQUAL(expected.size(), g.values.size());
    double mx = 0;
    for (double v : expected) mx = std::max(mx, std::fabs(v));
    double diff = 0;
    for (std::size_t i = 0; i < expected.size(); ++i)
      diff = std::max(diff, std::fabs(static_cast<double>(g.values[i]) - expected[i]));
    const double scale = mx > 1e-6 * global ? mx : global;
    BOOST_TEST_INFO(where << ": " << name << " max error " << diff << ", largest magnitude " << mx);
    BOOST_TEST(diff <= grad_tol * scale);
    ++compared;
  }
  // Every gradient of the reference was produced (no trainable tensor left out).
  std::size_t reference = 0;
  for (const auto& n : ref.names())
    if (n.rfind(prefix, 0) == 0 && n.size() > 5 && n.compare(n.size() - 5, 5, ".grad") == 0 &&
        (!prefix.empty() || n.rfind("f64.", 0) != 0))
      ++reference;
  BOOST_TEST(compared == reference);
  BOOST_TEST_MESSAGE(where << ": loss " << got.loss << ", logits error " << logit_err << ", "
                           << compared << " gradients");
}

}  // namespace

BOOST_AUTO_TEST_CASE(all_four_tasks_are_covered) {
  std::vector<std::string> names;
  for (const auto& c : cases()) names.push_back(c.filename().string());
  for (const char* want : {"fac_official", "lin_official", "entity_typing_concat_official",
                           "relation_concat_official"})
    BOOST_TEST((std::find(names.begin(), names.end(), want) != names.end()), want);
}

BOOST_AUTO_TEST_CASE(fp32_matches_the_authors_code) {
  for (const auto& c : cases()) check_case<float>(c, "", 1e-5, 1e-4);
}

BOOST_AUTO_TEST_CASE(fp64_matches_the_authors_code) {
  for (const auto& c : cases()) check_case<double>(c, "f64.", 1e-10, 1e-9);
}
