// Tensor views, the workspace arena, the storage types and the parallel loops.
#define BOOST_TEST_MODULE core
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "kadapter/kadapter.hpp"

using namespace kadapter;

BOOST_AUTO_TEST_CASE(static_and_dynamic_extents) {
  std::vector<float> buf(2 * 3 * 4);
  std::iota(buf.begin(), buf.end(), 0.0f);
  TensorView<float, dynamic, dynamic, 4> v(buf.data(), 2, 3, 4);
  static_assert(decltype(v)::extents_type::static_last() == 4);
  static_assert(decltype(v)::rank == 3);
  BOOST_TEST(v.size() == 24);
  BOOST_TEST(v(1, 2, 3) == 23.0f);
  BOOST_TEST(v(0, 1, 0) == 4.0f);
  auto row = v[1];  // (3, 4), last extent still static
  static_assert(std::is_same_v<decltype(row), TensorView<float, dynamic, 4>>);
  BOOST_TEST(row(0, 0) == 12.0f);
  BOOST_TEST(row.extent(0) == 3);
  auto m = row.matrix();  // Eigen map (3, 4), row-major
  BOOST_TEST(m(2, 1) == 21.0f);
  m(2, 1) = -1.0f;
  BOOST_TEST(buf[21] == -1.0f);
}

BOOST_AUTO_TEST_CASE(const_views_convert_and_map) {
  std::vector<double> buf{1, 2, 3, 4, 5, 6};
  MatrixView<double> mutable_view(buf.data(), 2, 3);
  MatrixView<const double> ro = mutable_view;
  BOOST_TEST(ro(1, 2) == 6.0);
  BOOST_TEST(ro.matrix().sum() == 21.0);
  BOOST_TEST(ro.vector().size() == 6);
  BOOST_TEST(ro.span().size() == 6u);
}

BOOST_AUTO_TEST_CASE(workspace_counts_allocations_and_aligns) {
  Workspace<float> ws;
  ws.reserve(100);
  BOOST_TEST(ws.allocations() == 1u);
  float* a = ws.take(3);
  float* b = ws.take(5);
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(a) % 64 == 0u);
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(b) % 64 == 0u);
  BOOST_TEST(b - a == 16);  // 3 floats rounded up to one 64-byte line
  ws.reset();
  ws.reserve(50);  // fits: no new allocation
  BOOST_TEST(ws.allocations() == 1u);
  ws.reserve(1000);
  BOOST_TEST(ws.allocations() == 2u);
  BOOST_TEST(ws.capacity() == 1000u);
}

BOOST_AUTO_TEST_CASE(half_conversion_matches_xtl_for_every_bit_pattern) {
  // Our decoder (used when reading F16 tensors) against xtl's half type, all 65536 values.
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    half h;
    std::memcpy(static_cast<void*>(&h), &bits, 2);
    const float expected = static_cast<float>(h);
    const float got = half_bits_to_float(bits);
    if (std::isnan(expected)) {
      BOOST_TEST(std::isnan(got));
    } else if (got != expected || std::signbit(got) != std::signbit(expected)) {
      BOOST_TEST(got == expected, "bits " << std::hex << b);
    }
  }
}

BOOST_AUTO_TEST_CASE(bfloat16_rounds_to_nearest_even) {
  BOOST_TEST(static_cast<float>(bfloat16(1.0f)) == 1.0f);
  BOOST_TEST(static_cast<float>(bfloat16(-2.5f)) == -2.5f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even gives 1.
  BOOST_TEST(static_cast<float>(bfloat16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);
  // 1 + 3*2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: ties to even gives 1 + 2^-6.
  BOOST_TEST(static_cast<float>(bfloat16(1.0f + 3 * std::ldexp(1.0f, -8))) ==
             1.0f + std::ldexp(1.0f, -6));
  BOOST_TEST(std::isnan(static_cast<float>(bfloat16(std::nanf("")))));
  BOOST_TEST(std::isinf(static_cast<float>(bfloat16(INFINITY))));
}

BOOST_AUTO_TEST_CASE(dtype_names_round_trip) {
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    DType parsed{};
    BOOST_TEST(parse_dtype(dtype_name(d), parsed));
    BOOST_TEST((parsed == d));
  }
  DType unused{};
  BOOST_TEST(!parse_dtype("F8_E4M3", unused));
  BOOST_TEST(dtype_size(DType::BF16) == 2u);
  static_assert(dtype_of<float>() == DType::F32 && dtype_of<bfloat16>() == DType::BF16);
}

BOOST_AUTO_TEST_CASE(presets_match_published_sizes) {
  BOOST_TEST(roberta_large.hidden == 1024);
  BOOST_TEST(roberta_large.layers == 24);
  BOOST_TEST(roberta_large.heads == 16);
  BOOST_TEST(minilm_l6_h384.head_dim() == 32);
  BOOST_TEST(roberta_base.position_offset() == 2);
  BOOST_TEST(bert_base_uncased.position_offset() == 0);
  BOOST_TEST(preset_name(minilm_l6_h384) == "minilm_l6_h384");
  EncoderConfig other = roberta_base;
  other.layers = 6;  // distilroberta-like: no preset, so the dynamic encoder
  BOOST_TEST(preset_name(other) == "dynamic");
  const bool dynamic_chosen = dispatch_encoder_config(other, [](auto tag) {
    return decltype(tag)::value.is_dynamic();
  });
  BOOST_TEST(dynamic_chosen);
  const bool large_chosen = dispatch_encoder_config(roberta_large, [](auto tag) {
    return decltype(tag)::value == roberta_large;
  });
  BOOST_TEST(large_chosen);
}

BOOST_AUTO_TEST_CASE(parallel_chunks_passes_an_exception_to_the_caller) {
  // An exception may not leave an OpenMP region (std::terminate): one thrown by a chunk on
  // any thread (here the last chunk's, on the last thread when there are several) reaches
  // the caller, and the threads can be used again afterwards.
  const int threads = Eigen::nbThreads();
  Eigen::setNbThreads(std::max(2, threads));
  for (int round = 0; round < 3; ++round) {
    BOOST_CHECK_EXCEPTION(kadapter::parallel_chunks(1000, 1,
                                                    [](kadapter::index_t, kadapter::index_t end, kadapter::index_t) {
                                                      if (end == 1000) throw std::runtime_error("chunk failed");
                                                    }),
                          std::runtime_error, [](const std::runtime_error& e) { return std::string(e.what()) == "chunk failed"; });
    std::vector<int> seen(1000, 0);
    kadapter::parallel_chunks(1000, 1, [&](kadapter::index_t b, kadapter::index_t e, kadapter::index_t) {
      for (kadapter::index_t i = b; i < e; ++i) ++seen[static_cast<std::size_t>(i)];
    });
    BOOST_TEST(std::count(seen.begin(), seen.end(), 1) == 1000);
  }
  Eigen::setNbThreads(threads);
}
