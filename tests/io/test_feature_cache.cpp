// The backbone feature cache: round trips in memory and through its file, fp16 / bf16 / fp32
// storage, keys that refuse a stale file, and states that equal a direct encoder pass.
#define BOOST_TEST_MODULE feature_cache
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kadapter/kadapter.hpp"

using namespace kadapter;
namespace fs = std::filesystem;

namespace {

fs::path scratch_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("kadapter_test_feature_cache_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

io::FeatureCacheSpec spec(DType dtype) {
  io::FeatureCacheSpec s;
  s.states = {4, 0, 2};
  s.hidden = 6;
  s.dtype = dtype;
  s.lengths = {3, 1, 5, 2};
  s.key = {{"model", "m1"}, {"data", "d1"}, {"max_seq_length", "5"}};
  return s;
}

// Encoder weights drawn from N(0, 0.3^2).
template <class Enc>
void randomize(Enc& enc, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (auto& v : enc.parameters()) v = normal(rng);
}

// @p f throws a kadapter::Error whose message contains @p words.
template <class F>
void refused(F&& f, const std::string& words) {
  try {
    f();
    BOOST_ERROR("accepted: " << words);
  } catch (const Error& e) {
    BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
  }
}

// Deterministic values of state k, sequence r, row t, column c.
float value(index_t k, index_t r, index_t t, index_t c) {
  return std::sin(0.37f * static_cast<float>(1 + k * 131 + r * 17 + t * 7 + c)) * 3.0f;
}

void fill(io::FeatureCache& cache) {
  for (index_t k : cache.spec().states)
    for (index_t r = 0; r < cache.rows(); ++r) {
      std::vector<float> rows;
      for (index_t t = 0; t < cache.length(r); ++t)
        for (index_t c = 0; c < cache.spec().hidden; ++c) rows.push_back(value(k, r, t, c));
      cache.store(r, k, rows.data());
    }
  cache.finish();
}

// Largest |loaded - stored| / |stored|, and whether the padding rows are zero.
double check(const io::FeatureCache& cache, index_t seq) {
  double worst = 0;
  const index_t H = cache.spec().hidden;
  for (index_t k : cache.spec().states)
    for (index_t r = 0; r < cache.rows(); ++r) {
      std::vector<float> out(static_cast<std::size_t>(seq * H), -1.0f);
      cache.load(r, k, out.data(), seq);
      for (index_t t = 0; t < seq; ++t)
        for (index_t c = 0; c < H; ++c) {
          const float got = out[static_cast<std::size_t>(t * H + c)];
          if (t >= cache.length(r)) {
            BOOST_TEST(got == 0.0f);
          } else {
            const double want = value(k, r, t, c);
            worst = std::max(worst, std::fabs(got - want) / std::fabs(want));
          }
        }
    }
  return worst;
}

}  // namespace

BOOST_AUTO_TEST_CASE(memory_round_trip_per_dtype) {
  for (auto [dtype, bound] : {std::pair{DType::F32, 0.0}, std::pair{DType::F16, 1.0 / 2048},
                              std::pair{DType::BF16, 1.0 / 256}}) {
    auto cache = io::FeatureCache::in_memory(spec(dtype));
    BOOST_TEST(!cache.complete());
    fill(cache);
    BOOST_TEST(cache.complete());
    BOOST_TEST(cache.bytes() == 3u * 11u * 6u * dtype_size(dtype));
    const double err = check(cache, 7);
    BOOST_TEST_INFO(dtype_name(dtype));
    BOOST_TEST(err <= bound);  // half an ulp of the storage type, relative
    if (dtype != DType::F32) BOOST_TEST(err > 0.0);
  }
}

BOOST_AUTO_TEST_CASE(file_round_trip_and_reopen) {
  const fs::path dir = scratch_dir("file");
  fs::path path;
  {
    auto cache = io::FeatureCache::open_or_create(dir, spec(DType::F16));
    BOOST_TEST(!cache.complete());
    path = cache.path();
    BOOST_TEST(!fs::exists(path));  // only PATH.tmp until finished
    fill(cache);
    BOOST_TEST(fs::exists(path));
    BOOST_TEST(check(cache, 5) <= 1.0 / 2048);
  }
  // Reopened: complete, same values; the file is a readable safetensors file.
  auto again = io::FeatureCache::open_or_create(dir, spec(DType::F16));
  BOOST_TEST(again.complete());
  BOOST_TEST(again.path() == path);
  BOOST_TEST(check(again, 5) <= 1.0 / 2048);
  io::SafetensorsFile f(path);
  BOOST_TEST(f.read<std::int32_t>("lengths") == std::vector<std::int32_t>({3, 1, 5, 2}));
  BOOST_TEST(f.metadata().at("data") == "d1");
  BOOST_TEST(f.read<float>("state.2")[0] == static_cast<float>(half(value(2, 0, 0, 0))));

  // Another key or dtype is another file; an existing file is never reused for it.
  auto other = spec(DType::F16);
  other.key["data"] = "d2";
  BOOST_TEST(io::FeatureCache::open_or_create(dir, other).path() != path);
  BOOST_TEST(io::FeatureCache::open_or_create(dir, spec(DType::BF16)).path() != path);
}

BOOST_AUTO_TEST_CASE(unfinished_cache_leaves_no_file) {
  const fs::path dir = scratch_dir("unfinished");
  {
    auto cache = io::FeatureCache::open_or_create(dir, spec(DType::F32));
    std::vector<float> rows(3 * 6, 1.0f);
    cache.store(0, 0, rows.data());
  }  // destroyed before finish(): e.g. an interrupted run
  BOOST_TEST(fs::is_empty(dir));
}

BOOST_AUTO_TEST_CASE(mismatched_or_damaged_file_is_an_error) {
  const fs::path dir = scratch_dir("damaged");
  fs::path path;
  {
    auto cache = io::FeatureCache::open_or_create(dir, spec(DType::F32));
    fill(cache);
    path = cache.path();
  }
  // A file under the right name whose metadata disagrees (e.g. renamed by hand).
  io::SafetensorsWriter w;
  const std::vector<std::int32_t> lengths{3, 1, 5, 2};
  w.add("lengths", {4}, std::span<const std::int32_t>(lengths));
  w.set_metadata("format", "kadapter-feature-cache");
  w.set_metadata("version", "1");
  w.set_metadata("data", "d1");
  w.set_metadata("max_seq_length", "5");
  w.set_metadata("model", "another");
  auto refused_open = [&](const std::string& words) {
    w.write(path);
    try {
      io::FeatureCache::open_or_create(dir, spec(DType::F32));
      BOOST_ERROR("expected an error: " << words);
    } catch (const Error& e) {
      BOOST_TEST(std::string(e.what()).find(path.string() + ": " + words) != std::string::npos, e.what());
    }
  };
  refused_open("__metadata__.model is 'another', expected 'm1'");
  // A file whose key has a field this data's key lacks (token type ids, say).
  w.set_metadata("model", "m1");
  w.set_metadata("token_types", "0123");
  refused_open("__metadata__.token_types is '0123', expected none");
  // A truncated file.
  fs::resize_file(path, 20);
  BOOST_CHECK_THROW(io::FeatureCache::open_or_create(dir, spec(DType::F32)), Error);
}

BOOST_AUTO_TEST_CASE(fp16_overflow_is_an_error) {
  auto cache = io::FeatureCache::in_memory(spec(DType::F16));
  std::vector<float> rows(3 * 6, 1.0f);
  rows[4] = 70000.0f;
  BOOST_CHECK_THROW(cache.store(0, 0, rows.data()), Error);
  auto wide = io::FeatureCache::in_memory(spec(DType::BF16));
  wide.store(0, 0, rows.data());  // bf16 has fp32's range
}

BOOST_AUTO_TEST_CASE(filled_states_equal_a_direct_pass) {
  const EncoderConfig c{Family::roberta, 50, 20, 1, 16, 3, 2, 32, 1e-5, 1};
  FrozenEncoder<dynamic_encoder, float> enc(c);
  randomize(enc, 5);
  const index_t n = 7, S = 9;
  const index_t lengths[n] = {4, 9, 2, 6, 9, 3, 5};
  std::vector<std::int64_t> ids, mask;
  for (index_t r = 0; r < n; ++r)
    for (index_t t = 0; t < S; ++t) {
      ids.push_back(t < lengths[r] ? 3 + (r * 11 + t * 5) % 40 : c.pad_id);
      mask.push_back(t < lengths[r]);
    }
  for (bool trim : {true, false}) {
    io::FeatureCacheSpec s;
    s.states = {0, 2, 3};
    s.hidden = c.hidden;
    s.dtype = DType::F32;
    s.lengths = io::cache_lengths(mask, S, trim);
    s.key = io::feature_cache_key(enc, ids, mask, S, ForwardOptions{});
    BOOST_TEST(s.lengths[1] == (trim ? 9 : 9));
    BOOST_TEST(s.lengths[2] == (trim ? 2 : 9));
    auto cache = io::FeatureCache::in_memory(s);
    index_t done = 0;
    io::fill_feature_cache(cache, enc, ids, mask, S, ForwardOptions{}, 3, [&](index_t d) { done = d; });
    BOOST_TEST(done == n);
    BOOST_TEST(cache.complete());
    // Direct: all sequences padded to S in one batch.
    HiddenStates<float> direct(c.layers);
    enc.forward(direct, TokenBatch{n, S, ids, mask, {}}, ForwardOptions{});
    double worst = 0, scale = 0;
    std::vector<float> out(static_cast<std::size_t>(S * c.hidden));
    for (index_t k : s.states)
      for (index_t r = 0; r < n; ++r) {
        cache.load(r, k, out.data(), S);
        for (index_t t = 0; t < lengths[r]; ++t)
          for (index_t j = 0; j < c.hidden; ++j) {
            const float want = direct[k].data()[(r * S + t) * c.hidden + j];
            scale = std::max(scale, static_cast<double>(std::fabs(want)));
            worst = std::max(worst, static_cast<double>(std::fabs(out[static_cast<std::size_t>(t * c.hidden + j)] - want)));
          }
      }
    BOOST_TEST_INFO("trim " << trim);
    BOOST_TEST(worst <= 1e-6 * scale);
  }
  // The key changes with the weights and with the data.
  const auto k1 = io::feature_cache_key(enc, ids, mask, S, ForwardOptions{});
  ids[3] += 1;
  const auto k2 = io::feature_cache_key(enc, ids, mask, S, ForwardOptions{});
  enc.parameters()[0] += 1.0f;
  const auto k3 = io::feature_cache_key(enc, ids, mask, S, ForwardOptions{});
  BOOST_TEST(k1.at("data") != k2.at("data"));
  BOOST_TEST(k1.at("model") == k2.at("model"));
  BOOST_TEST(k2.at("model") != k3.at("model"));
}

// BERT sentence pairs: the token type ids reach the cached states (equal to a direct pass with
// them, unequal to one without) and the key; all-zero types are the same as none.
BOOST_AUTO_TEST_CASE(token_types_reach_the_states_and_the_key) {
  const EncoderConfig c{Family::bert, 50, 20, 2, 16, 2, 2, 32, 1e-12, 0};
  FrozenEncoder<dynamic_encoder, float> enc(c);
  randomize(enc, 9);
  const index_t n = 5, S = 8;
  const index_t lengths[n] = {8, 3, 6, 5, 8};
  std::vector<std::int64_t> ids, mask, types;
  for (index_t r = 0; r < n; ++r)
    for (index_t t = 0; t < S; ++t) {
      ids.push_back(t < lengths[r] ? 2 + (r * 7 + t * 3) % 45 : c.pad_id);
      mask.push_back(t < lengths[r]);
      types.push_back(t < lengths[r] && t >= lengths[r] / 2);  // second segment: the second half
    }
  io::FeatureCacheSpec s;
  s.states = {1, 2};
  s.hidden = c.hidden;
  s.dtype = DType::F32;
  s.lengths = io::cache_lengths(mask, S, true);
  auto none = [](index_t) {};
  auto with_types = io::FeatureCache::in_memory(s);
  io::fill_feature_cache(with_types, enc, ids, mask, types, S, ForwardOptions{}, 2, none);
  auto without = io::FeatureCache::in_memory(s);
  io::fill_feature_cache(without, enc, ids, mask, S, ForwardOptions{}, 2, none);
  HiddenStates<float> direct(c.layers);
  enc.forward(direct, TokenBatch{n, S, ids, mask, types}, ForwardOptions{});
  double worst = 0, scale = 0, apart = 0;
  std::vector<float> a(static_cast<std::size_t>(S * c.hidden)), b(a.size());
  for (index_t k : s.states)
    for (index_t r = 0; r < n; ++r) {
      with_types.load(r, k, a.data(), S);
      without.load(r, k, b.data(), S);
      for (index_t t = 0; t < lengths[r]; ++t)
        for (index_t j = 0; j < c.hidden; ++j) {
          const std::size_t at = static_cast<std::size_t>(t * c.hidden + j);
          const float want = direct[k].data()[(r * S + t) * c.hidden + j];
          scale = std::max(scale, static_cast<double>(std::fabs(want)));
          worst = std::max(worst, static_cast<double>(std::fabs(a[at] - want)));
          apart = std::max(apart, static_cast<double>(std::fabs(a[at] - b[at])));
        }
    }
  BOOST_TEST(worst <= 1e-6 * scale);
  BOOST_TEST(apart > 1e-2 * scale);
  // All-zero types store what no types store.
  const std::vector<std::int64_t> zeros(types.size(), 0);
  auto zero_types = io::FeatureCache::in_memory(s);
  io::fill_feature_cache(zero_types, enc, ids, mask, zeros, S, ForwardOptions{}, 2, none);
  for (index_t k : s.states)
    for (index_t r = 0; r < n; ++r) {
      zero_types.load(r, k, a.data(), S);
      without.load(r, k, b.data(), S);
      BOOST_TEST((a == b));
    }

  const auto plain = io::feature_cache_key(enc, ids, mask, S, ForwardOptions{});
  BOOST_TEST((io::feature_cache_key(enc, ids, mask, zeros, S, ForwardOptions{}) == plain));
  const auto typed = io::feature_cache_key(enc, ids, mask, types, S, ForwardOptions{});
  BOOST_TEST(typed.count("token_types") == 1u);
  BOOST_TEST(plain.count("token_types") == 0u);
  auto flipped = types;
  flipped[3] = 1 - flipped[3];
  BOOST_TEST(io::feature_cache_key(enc, ids, mask, flipped, S, ForwardOptions{}).at("token_types") != typed.at("token_types"));

  refused([&] { auto f = io::FeatureCache::in_memory(s); io::fill_feature_cache(f, enc, ids, mask, std::span(types).first(7), S, ForwardOptions{}, 2, none); },
          "types must be empty or hold rows() * seq = 5 * 8 values, got 7");
  auto bad = types;
  bad[2 * S + 4] = 2;
  refused([&] { auto f = io::FeatureCache::in_memory(s); io::fill_feature_cache(f, enc, ids, mask, bad, S, ForwardOptions{}, 2, none); },
          "token type id 2 of sequence 2 at position 4 is outside the encoder's 0..1");
  refused([&] { (void)io::feature_cache_key(enc, ids, mask, std::span(zeros).first(39), S, ForwardOptions{}); },
          "types must be empty or hold as many values as ids (40), got 39");
  // RoBERTa has one token type.
  const EncoderConfig rc{Family::roberta, 50, 20, 1, 16, 2, 2, 32, 1e-5, 1};
  FrozenEncoder<dynamic_encoder, float> roberta(rc);
  refused([&] { auto f = io::FeatureCache::in_memory(s); io::fill_feature_cache(f, roberta, ids, mask, types, S, ForwardOptions{}, 2, none); },
          "token type id 1 of sequence 0 at position 4 is outside the encoder's 0..0");
}

// backbone_id: the same weights give the same id, in fp32 or fp64; one changed weight changes it.
BOOST_AUTO_TEST_CASE(backbone_id_follows_the_weights) {
  const EncoderConfig c{Family::roberta, 50, 20, 1, 8, 1, 2, 16, 1e-5, 1};
  FrozenEncoder<dynamic_encoder, float> f(c);
  FrozenEncoder<dynamic_encoder, double> d(c);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (std::size_t i = 0; i < f.parameters().size(); ++i) d.parameters()[i] = f.parameters()[i] = normal(rng);
  const std::string id = io::backbone_id(f);
  BOOST_TEST(id.size() == 17 + std::to_string(f.parameters().size()).size());
  BOOST_TEST(id.substr(16) == ":" + std::to_string(c.parameter_count()));
  BOOST_TEST(io::backbone_id(d) == id);
  f.parameters()[5] += 1e-3f;
  BOOST_TEST(io::backbone_id(f) != id);
}

// Misuse of the public functions is a kadapter::Error (also in builds without assertions),
// never a read or write out of bounds.
BOOST_AUTO_TEST_CASE(misuse_is_an_error) {
  auto cache = io::FeatureCache::in_memory(spec(DType::F32));
  std::vector<float> rows(5 * 6, 1.0f), out(5 * 6);
  refused([&] { cache.store(4, 0, rows.data()); }, "sequence 4 is not in 0..3");
  refused([&] { cache.store(-1, 0, rows.data()); }, "sequence -1 is not in 0..3");
  refused([&] { cache.store(0, 1, rows.data()); }, "hidden state 1 is not kept (kept: 0, 2, 4)");
  fill(cache);
  refused([&] { cache.store(0, 0, rows.data()); }, "store() on a complete cache");
  refused([&] { cache.load(2, 0, out.data(), 4); }, "sequence 2 has 5 stored rows, more than the 4 asked for");
  refused([&] { cache.load(0, 3, out.data(), 5); }, "hidden state 3 is not kept");
  refused([&] { (void)cache.length(9); }, "sequence 9 is not in 0..3");

  const EncoderConfig c{Family::roberta, 50, 20, 1, 6, 3, 2, 12, 1e-5, 1};
  FrozenEncoder<dynamic_encoder, float> enc(c);
  const std::vector<std::int64_t> ids(4 * 5, 3), mask(4 * 5, 1);
  auto fresh = [&] {
    io::FeatureCacheSpec s = spec(DType::F32);
    s.states = {0, 1};
    return io::FeatureCache::in_memory(s);
  };
  auto none = [](index_t) {};
  refused([&] { auto f = fresh(); io::fill_feature_cache(f, enc, std::span(ids).first(19), mask, 5, ForwardOptions{}, 2, none); },
          "ids and mask must each hold rows() * seq = 4 * 5 values, got 19 and 20");
  refused([&] { auto f = fresh(); io::fill_feature_cache(f, enc, ids, mask, 5, ForwardOptions{}, 0, none); }, "batch must be positive");
  const std::vector<std::int64_t> short_ids(4 * 4, 3), short_mask(4 * 4, 1);
  refused([&] { auto f = fresh(); io::fill_feature_cache(f, enc, short_ids, short_mask, 4, ForwardOptions{}, 2, none); },
          "sequence 2 has length 5 beyond seq = 4");
  refused([&] { io::fill_feature_cache(cache, enc, ids, mask, 5, ForwardOptions{}, 2, none); }, "the cache is already complete");
  const EncoderConfig wide{Family::roberta, 50, 20, 1, 8, 4, 2, 12, 1e-5, 1};
  FrozenEncoder<dynamic_encoder, float> other(wide);
  refused([&] { auto f = fresh(); io::fill_feature_cache(f, other, ids, mask, 5, ForwardOptions{}, 2, none); },
          "the encoder's hidden size 8 is not the cache's 6");
  auto f = fresh();
  io::fill_feature_cache(f, enc, ids, mask, 5, ForwardOptions{}, 3, none);
  BOOST_TEST(f.complete());
}
