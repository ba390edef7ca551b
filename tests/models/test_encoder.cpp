// The frozen encoder against HuggingFace transformers (fixtures made by
// tests/fixtures/make_encoder_fixtures.py): tiny RoBERTa and BERT, with padding.
#define BOOST_TEST_MODULE encoder
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "kadapter/kadapter.hpp"
#include "support/compare.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

const fs::path kFixtures = fs::path(KA_FIXTURE_DIR) / "encoder";

struct Batch {
  index_t batch = 0, seq = 0;
  std::vector<std::int64_t> ids, mask, types;
  TokenBatch view() const { return {batch, seq, ids, mask, types}; }
};

Batch read_batch(const fs::path& file) {
  io::SafetensorsFile f(file);
  Batch b;
  const auto& info = f.info("input_ids");
  b.batch = info.shape.at(0);
  b.seq = info.shape.at(1);
  b.ids = f.read<std::int64_t>("input_ids");
  b.mask = f.read<std::int64_t>("attention_mask");
  if (f.contains("token_type_ids")) b.types = f.read<std::int64_t>("token_type_ids");
  return b;
}

// Compare every hidden state with the reference tensors "<prefix>hidden_states.K".
template <class T>
void check_states(const HiddenStates<T>& got, const fs::path& expected_file,
                  const std::string& prefix, double tolerance) {
  io::SafetensorsFile ref(expected_file);
  for (index_t k : got.kept()) {
    const std::string name = prefix + "hidden_states." + std::to_string(k);
    const auto expected = ref.read<double>(name);
    const auto state = got[k];
    std::span<const T> actual = state.span();
    BOOST_REQUIRE_EQUAL(actual.size(), expected.size());
    const double rel = test::relative_error(actual, std::span<const double>(expected));
    const double mx = test::max_error_over_max(actual, std::span<const double>(expected));
    BOOST_TEST_INFO(name << ": relative error " << rel << ", max error / max " << mx);
    BOOST_TEST(rel < tolerance);
    BOOST_TEST(mx < tolerance);
  }
}

template <class T>
void run_family(const std::string& family, const std::string& prefix, PositionScheme scheme,
                double tolerance) {
  const fs::path dir = kFixtures / family;
  const Batch batch = read_batch(dir / "batch.safetensors");
  io::with_encoder_dir<T>(dir, [&](auto& enc, const io::EncoderLoadReport&) {
    HiddenStates<T> states(enc.config().layers);
    enc.forward(states, batch.view(), {scheme, MaskFill::lowest});
    check_states(states, dir / "expected.safetensors", prefix, tolerance);
    return 0;
  });
}

}  // namespace

BOOST_AUTO_TEST_CASE(roberta_matches_huggingface_fp32) {
  run_family<float>("tiny_roberta", "", PositionScheme::huggingface, 1e-5);
}

BOOST_AUTO_TEST_CASE(roberta_official_positions_fp32) {
  run_family<float>("tiny_roberta", "official.", PositionScheme::official, 1e-5);
}

BOOST_AUTO_TEST_CASE(roberta_matches_huggingface_fp64) {
  run_family<double>("tiny_roberta", "f64.", PositionScheme::huggingface, 1e-12);
  run_family<double>("tiny_roberta", "f64.official.", PositionScheme::official, 1e-12);
}

BOOST_AUTO_TEST_CASE(bert_with_prefix_and_token_types) {
  run_family<float>("tiny_bert", "", PositionScheme::huggingface, 1e-5);
  run_family<double>("tiny_bert", "f64.", PositionScheme::huggingface, 1e-12);
}

BOOST_AUTO_TEST_CASE(bert_ignores_head_tensors_and_reports_prefix) {
  io::with_encoder_dir<float>(kFixtures / "tiny_bert", [](auto&, const io::EncoderLoadReport& r) {
    BOOST_TEST(r.prefix == "bert.");
    BOOST_TEST((std::find(r.ignored.begin(), r.ignored.end(), "cls.predictions.bias") !=
                r.ignored.end()));
    return 0;
  });
}

BOOST_AUTO_TEST_CASE(official_positions_differ_from_huggingface_with_padding) {
  // The two numberings agree on unpadded rows and differ once a row is padded... but only
  // at the padded positions for RoBERTa (real tokens count the same way when padding is at
  // the end). Check the position ids directly.
  const Batch batch = read_batch(kFixtures / "tiny_roberta" / "batch.safetensors");
  io::with_encoder_dir<float>(kFixtures / "tiny_roberta", [&](auto& enc, const auto&) {
    HiddenStates<float> states(enc.config().layers, {0});
    enc.forward(states, batch.view(), {PositionScheme::huggingface});
    const std::vector<std::int64_t> hf(enc.last_positions().begin(), enc.last_positions().end());
    enc.forward(states, batch.view(), {PositionScheme::official});
    const std::vector<std::int64_t> off(enc.last_positions().begin(), enc.last_positions().end());
    const index_t pad = enc.config().pad_id;
    for (index_t i = 0; i < batch.batch * batch.seq; ++i) {
      const index_t t = i % batch.seq;
      BOOST_TEST(off[i] == pad + 1 + t);
      BOOST_TEST(hf[i] == (batch.ids[i] == pad ? pad : pad + 1 + t));
    }
    return 0;
  });
}

// A compile-time config equal to the tiny RoBERTa fixture: the static instantiation must
// compute exactly what the run-time one computes.
inline constexpr EncoderConfig tiny_roberta_static{Family::roberta, 64, 40, 1, 32, 2, 4, 48,
                                                   1e-5, 1};

BOOST_AUTO_TEST_CASE(static_and_dynamic_configs_agree_exactly) {
  const fs::path dir = kFixtures / "tiny_roberta";
  const EncoderConfig cfg = io::read_hf_config(dir / "config.json");
  BOOST_REQUIRE(cfg == tiny_roberta_static);
  io::SafetensorsFile weights(dir / "model.safetensors");
  const Batch batch = read_batch(dir / "batch.safetensors");

  FrozenEncoder<tiny_roberta_static, float> fixed;
  FrozenEncoder<dynamic_encoder, float> dyn(cfg);
  static_assert(FrozenEncoder<tiny_roberta_static, float>::static_hidden == 32);
  static_assert(FrozenEncoder<dynamic_encoder, float>::static_hidden == dynamic);
  io::load_encoder_weights(fixed, weights);
  io::load_encoder_weights(dyn, weights);
  HiddenStates<float> a(cfg.layers), b(cfg.layers);
  fixed.forward(a, batch.view());
  dyn.forward(b, batch.view());
  for (index_t k = 0; k <= cfg.layers; ++k) {
    auto x = a[k].span(), y = b[k].span();
    BOOST_TEST(std::equal(x.begin(), x.end(), y.begin()));
  }
  auto view = fixed.state(a, cfg.layers);
  static_assert(decltype(view)::extents_type::static_last() == 32);
  BOOST_TEST(view.extent(2) == 32);
}

BOOST_AUTO_TEST_CASE(keeps_only_requested_states) {
  const fs::path dir = kFixtures / "tiny_roberta";
  const Batch batch = read_batch(dir / "batch.safetensors");
  io::with_encoder_dir<float>(dir, [&](auto& enc, const auto&) {
    const index_t L = enc.config().layers;
    HiddenStates<float> all(L), some(L, {L, 0});
    enc.forward(all, batch.view());
    enc.forward(some, batch.view());
    BOOST_TEST(some.kept() == (std::vector<index_t>{0, L}));
    BOOST_TEST(!some.has(1));
    BOOST_CHECK_THROW(some[1], Error);
    for (index_t k : some.kept()) {
      auto x = all[k].span(), y = some[k].span();
      BOOST_TEST(std::equal(x.begin(), x.end(), y.begin()));
    }
    BOOST_CHECK_THROW(HiddenStates<float>(L, {L + 1}), Error);
    return 0;
  });
}

BOOST_AUTO_TEST_CASE(padding_does_not_change_real_tokens) {
  // With masking and HuggingFace positions, a padded row's real tokens equal the same row
  // encoded alone without padding.
  const fs::path dir = kFixtures / "tiny_roberta";
  const Batch batch = read_batch(dir / "batch.safetensors");
  io::with_encoder_dir<double>(dir, [&](auto& enc, const auto&) {
    HiddenStates<double> padded(enc.config().layers);
    enc.forward(padded, batch.view());
    for (index_t r = 0; r < batch.batch; ++r) {
      index_t len = 0;
      for (index_t t = 0; t < batch.seq; ++t) len += batch.mask[r * batch.seq + t];
      Batch one;
      one.batch = 1;
      one.seq = len;
      one.ids.assign(batch.ids.begin() + r * batch.seq, batch.ids.begin() + r * batch.seq + len);
      one.mask.assign(len, 1);
      HiddenStates<double> alone(enc.config().layers);
      enc.forward(alone, one.view());
      for (index_t k = 0; k <= enc.config().layers; ++k)
        for (index_t t = 0; t < len; ++t)
          for (index_t h = 0; h < enc.config().hidden; ++h)
            BOOST_TEST(alone[k](0, t, h) == padded[k](r, t, h),
                       boost::test_tools::tolerance(1e-12));
    }
    return 0;
  });
}

BOOST_AUTO_TEST_CASE(no_allocation_after_first_forward) {
  const fs::path dir = kFixtures / "tiny_roberta";
  const Batch batch = read_batch(dir / "batch.safetensors");
  io::with_encoder_dir<float>(dir, [&](auto& enc, const auto&) {
    HiddenStates<float> states(enc.config().layers);
    enc.forward(states, batch.view());
    const auto after_first = enc.workspace_allocations();
    for (int i = 0; i < 3; ++i) enc.forward(states, batch.view());
    BOOST_TEST(enc.workspace_allocations() == after_first);
    return 0;
  });
}

BOOST_AUTO_TEST_CASE(rejects_bad_token_batches) {
  const fs::path dir = kFixtures / "tiny_roberta";
  io::with_encoder_dir<float>(dir, [&](auto& enc, const auto&) {
    HiddenStates<float> states(enc.config().layers);
    auto expect_error = [&](Batch b, const std::string& words) {
      BOOST_CHECK_EXCEPTION(enc.forward(states, b.view()), Error, [&](const Error& e) {
        BOOST_TEST_INFO(e.what());
        return std::string(e.what()).find(words) != std::string::npos;
      });
    };
    Batch ok{1, 3, {0, 5, 2}, {1, 1, 1}, {}};
    Batch b = ok;
    b.ids[1] = 64;
    expect_error(b, "input_ids[0][1] = 64 is outside the vocabulary [0, 64)");
    b = ok;
    b.mask[2] = 3;
    expect_error(b, "attention_mask[0][2] = 3, expected 0 or 1");
    b = ok;
    b.types = {0, 1, 0};
    expect_error(b, "token_type_ids[0][1] = 1 is outside [0, 1)");
    b = ok;
    b.ids.pop_back();
    expect_error(b, "must each hold B*T = 3 values");
    Batch longer{1, 40, std::vector<std::int64_t>(40, 5), std::vector<std::int64_t>(40, 1), {}};
    expect_error(longer, "sequence too long");
    return 0;
  });
}
