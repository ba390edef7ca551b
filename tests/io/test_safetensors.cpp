#define BOOST_TEST_MODULE safetensors
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "kadapter/core/dtype.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/io/safetensors.hpp"

namespace fs = std::filesystem;
using kadapter::DType;
using kadapter::Error;
using kadapter::io::SafetensorsFile;
using kadapter::io::SafetensorsWriter;

namespace {

/// A fresh directory under the system temp directory, removed (with its contents) on exit.
struct TempDir {
  fs::path dir;
  TempDir() {
    static std::atomic<int> counter{0};
    dir = fs::temp_directory_path() /
          ("kadapter_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  fs::path file(const std::string& name) const { return dir / name; }
};

/// Write exactly @p content to @p path.
void write_bytes(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  BOOST_REQUIRE(out.good());
}

/// The 8-byte little-endian encoding of @p value.
std::string u64_le(std::uint64_t value) {
  std::string text(8, '\0');
  for (std::size_t i = 0; i < 8; ++i) text[i] = static_cast<char>(value >> (8 * i));
  return text;
}

/// Hand-built safetensors file: u64 @p declared_length, @p header, then @p data_bytes bytes.
void write_raw(const fs::path& path, std::uint64_t declared_length, const std::string& header,
               std::size_t data_bytes) {
  std::string data(data_bytes, '\0');
  for (std::size_t i = 0; i < data_bytes; ++i) data[i] = static_cast<char>(i);
  write_bytes(path, u64_le(declared_length) + header + data);
}

/// Hand-built safetensors file whose length field matches @p header.
void write_raw(const fs::path& path, const std::string& header, std::size_t data_bytes) {
  write_raw(path, header.size(), header, data_bytes);
}

/// Predicate for BOOST_CHECK_EXCEPTION: the message starts with "PATH: " and contains every word.
struct MessageHas {
  std::string path;
  std::vector<std::string> words;
  MessageHas(const fs::path& p, std::initializer_list<std::string> w)
      : path(p.string()), words(w) {}
  MessageHas(std::string prefix, std::initializer_list<std::string> w)
      : path(std::move(prefix)), words(w) {}
  bool operator()(const Error& error) const {
    const std::string message = error.what();
    bool ok = message.rfind(path + ": ", 0) == 0 || path.empty();
    for (const auto& word : words) ok = ok && message.find(word) != std::string::npos;
    BOOST_TEST_MESSAGE((ok ? "message: " : "UNEXPECTED message: ") << message);
    return ok;
  }
};

template <class T>
std::span<const T> view(const std::vector<T>& values) {
  return std::span<const T>(values);
}

/// Open a file with a single well-formed entry "t" built from @p entry_json and @p data_bytes.
void write_single(const fs::path& path, const std::string& entry_json, std::size_t data_bytes) {
  write_raw(path, "{\"t\":" + entry_json + "}", data_bytes);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips and reads
// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(round_trip_all_dtypes_and_metadata) {
  TempDir tmp;
  const fs::path path = tmp.file("model.safetensors");
  const std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 6.0f};
  const std::vector<double> f64 = {3.141592653589793, -1e300};
  const std::vector<kadapter::half> f16 = {kadapter::half(1.0f), kadapter::half(-0.5f),
                                           kadapter::half(65504.0f)};
  const std::vector<kadapter::bfloat16> bf16 = {kadapter::bfloat16(1.0f), kadapter::bfloat16(-3.0f),
                                                kadapter::bfloat16(0.15625f),
                                                kadapter::bfloat16(1e30f)};
  const std::vector<std::int64_t> i64 = {0, -1, (std::int64_t{1} << 40), 7};

  SafetensorsWriter writer;
  writer.add<float>("w_f32", {2, 3}, view(f32));
  writer.add<double>("w_f64", {2}, view(f64));
  writer.add<kadapter::half>("w_f16", {3}, view(f16));
  writer.add<kadapter::bfloat16>("w_bf16", {2, 2}, view(bf16));
  writer.add<std::int64_t>("w_i64", {4}, view(i64));
  writer.set_metadata("format", "pt");
  writer.set_metadata("note", "first");
  writer.set_metadata("note", "héllo \"quoted\"");
  writer.write(path);
  BOOST_CHECK(!fs::exists(tmp.file("model.safetensors.tmp")));

  const SafetensorsFile file(path);
  BOOST_CHECK(file.path() == path);
  const std::vector<std::string> expected_names = {"w_bf16", "w_f16", "w_f32", "w_f64", "w_i64"};
  BOOST_TEST(file.names() == expected_names, boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(file.metadata().size(), 2u);
  BOOST_CHECK_EQUAL(file.metadata().at("format"), "pt");
  BOOST_CHECK_EQUAL(file.metadata().at("note"), "héllo \"quoted\"");

  BOOST_CHECK(file.info("w_f32").dtype == DType::F32);
  BOOST_CHECK_EQUAL(file.info("w_f32").shape_string(), "[2, 3]");
  BOOST_CHECK_EQUAL(file.info("w_f32").numel(), 6);
  BOOST_CHECK(file.info("w_f16").dtype == DType::F16);
  BOOST_CHECK(file.info("w_bf16").dtype == DType::BF16);
  BOOST_CHECK(file.info("w_f64").dtype == DType::F64);
  BOOST_CHECK(file.info("w_i64").dtype == DType::I64);

  const auto f32_read = file.read<float>("w_f32", {2, 3});
  BOOST_CHECK_EQUAL_COLLECTIONS(f32_read.begin(), f32_read.end(), f32.begin(), f32.end());
  const auto f64_read = file.read<double>("w_f64");
  BOOST_CHECK_EQUAL_COLLECTIONS(f64_read.begin(), f64_read.end(), f64.begin(), f64.end());
  const auto i64_read = file.read<std::int64_t>("w_i64");
  BOOST_CHECK_EQUAL_COLLECTIONS(i64_read.begin(), i64_read.end(), i64.begin(), i64.end());

  // Raw bytes survive unchanged for the storage-only types.
  const auto f16_bytes = file.bytes("w_f16");
  const auto f16_source = std::as_bytes(view(f16));
  BOOST_CHECK(std::equal(f16_bytes.begin(), f16_bytes.end(), f16_source.begin(), f16_source.end()));
  const auto bf16_bytes = file.bytes("w_bf16");
  const auto bf16_source = std::as_bytes(view(bf16));
  BOOST_CHECK(
      std::equal(bf16_bytes.begin(), bf16_bytes.end(), bf16_source.begin(), bf16_source.end()));
}

BOOST_AUTO_TEST_CASE(writer_layout_is_aligned_contiguous_and_sorted) {
  TempDir tmp;
  const fs::path path = tmp.file("layout.safetensors");
  const std::vector<float> three = {1, 2, 3};
  const std::vector<std::int32_t> one = {5};
  const std::vector<double> two = {1, 2};
  SafetensorsWriter writer;
  writer.add<float>("zeta", {3}, view(three));
  writer.add<std::int32_t>("alpha", {1}, view(one));
  writer.add<double>("mid", {2}, view(two));
  writer.write(path);

  std::ifstream in(path, std::ios::binary);
  const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) {
    header_length =
        (header_length << 8) | static_cast<unsigned char>(content[static_cast<std::size_t>(i)]);
  }
  BOOST_CHECK_EQUAL((8 + header_length) % 8, 0u);
  BOOST_CHECK_EQUAL(content.size(), 8 + header_length + 4 + 16 + 12);
  BOOST_CHECK_EQUAL(content.back() != ' ', true);

  const SafetensorsFile file(path);
  BOOST_CHECK_EQUAL(file.info("alpha").begin, 0u);
  BOOST_CHECK_EQUAL(file.info("alpha").end, 4u);
  BOOST_CHECK_EQUAL(file.info("mid").begin, 4u);
  BOOST_CHECK_EQUAL(file.info("mid").end, 20u);
  BOOST_CHECK_EQUAL(file.info("zeta").begin, 20u);
  BOOST_CHECK_EQUAL(file.info("zeta").end, 32u);
  BOOST_CHECK_EQUAL(file.data_size(), 32u);
  BOOST_CHECK(file.metadata().empty());
}

BOOST_AUTO_TEST_CASE(writer_overwrites_existing_file) {
  TempDir tmp;
  const fs::path path = tmp.file("again.safetensors");
  const std::vector<float> first = {1, 2};
  const std::vector<float> second = {3};
  SafetensorsWriter writer_one;
  writer_one.add<float>("x", {2}, view(first));
  writer_one.write(path);
  SafetensorsWriter writer_two;
  writer_two.add<float>("y", {1}, view(second));
  writer_two.write(path);
  const SafetensorsFile file(path);
  BOOST_CHECK(!file.contains("x"));
  BOOST_CHECK_EQUAL(file.read<float>("y").at(0), 3.0f);
}

BOOST_AUTO_TEST_CASE(converting_reads) {
  TempDir tmp;
  const fs::path path = tmp.file("convert.safetensors");
  const std::vector<float> representable = {1.0f, -0.5f, 256.0f, 0.15625f, -3.0f, 0.0f};
  // Sized up front: vector<half>::push_back does not compile with clang (xtl's half operators
  // make the iterator arithmetic inside vector::back() ambiguous).
  std::vector<kadapter::bfloat16> bf16(representable.size());
  std::vector<kadapter::half> f16(representable.size());
  for (std::size_t i = 0; i < representable.size(); ++i) {
    bf16[i] = kadapter::bfloat16(representable[i]);
    f16[i] = kadapter::half(representable[i]);
  }
  const std::vector<float> f32 = {0.1f, -1e20f, 3.5f};
  const std::vector<double> f64 = {0.5, -2.25};
  const std::vector<std::int32_t> i32 = {-7, 2147483647};
  const std::vector<std::int64_t> i64_small = {-2147483648LL, 12};
  const std::vector<std::byte> u8 = {std::byte{0}, std::byte{200}, std::byte{255}};
  const std::vector<std::byte> i8 = {std::byte{0x80}, std::byte{0x7f}};
  const std::vector<std::byte> boolean = {std::byte{1}, std::byte{0}};
  const std::vector<std::int16_t> i16 = {-300, 300};

  SafetensorsWriter writer;
  writer.add<kadapter::bfloat16>("bf16", {6}, view(bf16));
  writer.add<kadapter::half>("f16", {2, 3}, view(f16));
  writer.add<float>("f32", {3}, view(f32));
  writer.add<double>("f64", {2}, view(f64));
  writer.add<std::int32_t>("i32", {2}, view(i32));
  writer.add<std::int64_t>("i64", {2}, view(i64_small));
  writer.add("u8", DType::U8, {3}, u8);
  writer.add("i8", DType::I8, {2}, i8);
  writer.add("bool", DType::BOOL, {2}, boolean);
  writer.add("i16", DType::I16, {2}, std::as_bytes(view(i16)));
  writer.write(path);
  const SafetensorsFile file(path);

  const auto bf16_as_float = file.read<float>("bf16");
  BOOST_CHECK_EQUAL_COLLECTIONS(bf16_as_float.begin(), bf16_as_float.end(), representable.begin(),
                                representable.end());
  const auto f16_as_float = file.read<float>("f16", {2, 3});
  BOOST_CHECK_EQUAL_COLLECTIONS(f16_as_float.begin(), f16_as_float.end(), representable.begin(),
                                representable.end());
  const auto bf16_as_double = file.read<double>("bf16");
  for (std::size_t i = 0; i < representable.size(); ++i) {
    BOOST_CHECK_EQUAL(bf16_as_double[i], static_cast<double>(representable[i]));
  }
  const auto f32_as_double = file.read<double>("f32");
  for (std::size_t i = 0; i < f32.size(); ++i) {
    BOOST_CHECK_EQUAL(f32_as_double[i], static_cast<double>(f32[i]));
  }
  const auto f64_as_float = file.read<float>("f64");
  BOOST_CHECK_EQUAL(f64_as_float[0], 0.5f);
  BOOST_CHECK_EQUAL(f64_as_float[1], -2.25f);

  const auto i32_as_i64 = file.read<std::int64_t>("i32");
  BOOST_CHECK_EQUAL(i32_as_i64[0], -7);
  BOOST_CHECK_EQUAL(i32_as_i64[1], 2147483647);
  const auto i64_as_i32 = file.read<std::int32_t>("i64");
  BOOST_CHECK_EQUAL(i64_as_i32[0], -2147483647 - 1);
  BOOST_CHECK_EQUAL(i64_as_i32[1], 12);
  const auto u8_as_i32 = file.read<std::int32_t>("u8");
  BOOST_CHECK_EQUAL(u8_as_i32[1], 200);
  BOOST_CHECK_EQUAL(u8_as_i32[2], 255);
  const auto i8_as_i64 = file.read<std::int64_t>("i8");
  BOOST_CHECK_EQUAL(i8_as_i64[0], -128);
  BOOST_CHECK_EQUAL(i8_as_i64[1], 127);
  const auto bool_as_i32 = file.read<std::int32_t>("bool");
  BOOST_CHECK_EQUAL(bool_as_i32[0], 1);
  BOOST_CHECK_EQUAL(bool_as_i32[1], 0);
  const auto i16_as_i32 = file.read<std::int32_t>("i16");
  BOOST_CHECK_EQUAL(i16_as_i32[0], -300);
  BOOST_CHECK_EQUAL(i16_as_i32[1], 300);

  // read_into with a caller's buffer.
  std::array<double, 3> buffer{};
  file.read_into<double>("f32", std::span<double>(buffer));
  BOOST_CHECK_EQUAL(buffer[2], 3.5);
}

BOOST_AUTO_TEST_CASE(read_rejects_float_int_kind_mismatch) {
  TempDir tmp;
  const fs::path path = tmp.file("kinds.safetensors");
  const std::vector<kadapter::bfloat16> bf16 = {kadapter::bfloat16(1.0f)};
  const std::vector<std::int64_t> i64 = {3};
  SafetensorsWriter writer;
  writer.add<kadapter::bfloat16>("floaty", {1}, view(bf16));
  writer.add<std::int64_t>("inty", {1}, view(i64));
  writer.write(path);
  const SafetensorsFile file(path);
  BOOST_CHECK_EXCEPTION(file.read<std::int64_t>("floaty"), Error,
                        MessageHas(path, {"'floaty'", "BF16", "I64"}));
  BOOST_CHECK_EXCEPTION(file.read<std::int32_t>("floaty"), Error,
                        MessageHas(path, {"'floaty'", "BF16", "I32"}));
  BOOST_CHECK_EXCEPTION(file.read<float>("inty"), Error,
                        MessageHas(path, {"'inty'", "I64", "F32"}));
  BOOST_CHECK_EXCEPTION(file.read<double>("inty"), Error,
                        MessageHas(path, {"'inty'", "I64", "F64"}));
}

BOOST_AUTO_TEST_CASE(read_into_rejects_wrong_buffer_size) {
  TempDir tmp;
  const fs::path path = tmp.file("size.safetensors");
  const std::vector<float> values = {1, 2, 3, 4};
  SafetensorsWriter writer;
  writer.add<float>("m", {2, 2}, view(values));
  writer.write(path);
  const SafetensorsFile file(path);
  std::vector<float> too_small(3);
  BOOST_CHECK_EXCEPTION(file.read_into<float>("m", std::span<float>(too_small)), Error,
                        MessageHas(path, {"'m'", "4 elements", "holds 3"}));
  std::vector<double> too_big(5);
  BOOST_CHECK_EXCEPTION(file.read_into<double>("m", std::span<double>(too_big)), Error,
                        MessageHas(path, {"'m'", "4 elements", "holds 5"}));
}

BOOST_AUTO_TEST_CASE(read_i64_into_i32_rejects_out_of_range) {
  TempDir tmp;
  const fs::path path = tmp.file("range.safetensors");
  const std::vector<std::int64_t> values = {1, std::int64_t{1} << 33};
  SafetensorsWriter writer;
  writer.add<std::int64_t>("big", {2}, view(values));
  writer.write(path);
  const SafetensorsFile file(path);
  BOOST_CHECK_EXCEPTION(file.read<std::int32_t>("big"), Error,
                        MessageHas(path, {"'big'", "element 1", "8589934592", "I32"}));
}

BOOST_AUTO_TEST_CASE(scalar_and_zero_size_tensors) {
  TempDir tmp;
  const fs::path path = tmp.file("odd.safetensors");
  const std::vector<float> scalar = {42.0f};
  const std::vector<float> nothing;
  const std::vector<float> after = {7.0f};
  SafetensorsWriter writer;
  writer.add<float>("a_scalar", {}, view(scalar));
  writer.add<float>("b_empty", {0, 3}, view(nothing));
  writer.add<float>("c_after", {1}, view(after));
  writer.add<float>("d_empty_at_end", {5, 0}, view(nothing));
  writer.write(path);

  const SafetensorsFile file(path);
  const auto& scalar_info = file.info("a_scalar");
  BOOST_CHECK(scalar_info.shape.empty());
  BOOST_CHECK_EQUAL(scalar_info.numel(), 1);
  BOOST_CHECK_EQUAL(scalar_info.shape_string(), "[]");
  BOOST_CHECK_EQUAL(file.read<float>("a_scalar", {}).at(0), 42.0f);

  const auto& empty_info = file.info("b_empty");
  BOOST_CHECK_EQUAL(empty_info.numel(), 0);
  BOOST_CHECK_EQUAL(empty_info.begin, empty_info.end);
  BOOST_CHECK(file.read<double>("b_empty", {0, 3}).empty());
  BOOST_CHECK(file.bytes("b_empty").empty());
  BOOST_CHECK(file.read<float>("d_empty_at_end").empty());
  BOOST_CHECK_EQUAL(file.read<float>("c_after").at(0), 7.0f);
}

BOOST_AUTO_TEST_CASE(zero_size_tensors_inside_other_spans_are_legal) {
  TempDir tmp;
  const fs::path path = tmp.file("inside.safetensors");
  write_raw(path,
            R"({"big":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
            R"("e2":{"dtype":"I64","shape":[2,0],"data_offsets":[4,4]},)"
            R"("e3":{"dtype":"U8","shape":[0],"data_offsets":[16,16]}})",
            16);
  const SafetensorsFile file(path);
  BOOST_CHECK_EQUAL(file.names().size(), 4u);
  BOOST_CHECK_EQUAL(file.bytes("big").size(), 16u);
}

BOOST_AUTO_TEST_CASE(header_only_files) {
  TempDir tmp;
  const fs::path written = tmp.file("empty_writer.safetensors");
  SafetensorsWriter writer;
  writer.set_metadata("k", "v");
  writer.write(written);
  const SafetensorsFile from_writer(written);
  BOOST_CHECK(from_writer.names().empty());
  BOOST_CHECK_EQUAL(from_writer.data_size(), 0u);
  BOOST_CHECK_EQUAL(from_writer.metadata().at("k"), "v");

  const fs::path raw = tmp.file("raw_empty.safetensors");
  write_raw(raw, "{}", 0);
  const SafetensorsFile from_raw(raw);
  BOOST_CHECK(from_raw.names().empty());
  BOOST_CHECK(from_raw.metadata().empty());

  // A zero-size tensor in a file with an empty data area.
  const fs::path raw_zero = tmp.file("raw_zero.safetensors");
  write_raw(raw_zero, R"({"z":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}})", 0);
  const SafetensorsFile zero(raw_zero);
  BOOST_CHECK(zero.read<float>("z").empty());
  BOOST_CHECK(zero.bytes("z").empty());
}

BOOST_AUTO_TEST_CASE(shape_checked_read) {
  TempDir tmp;
  const fs::path path = tmp.file("shape.safetensors");
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  SafetensorsWriter writer;
  writer.add<float>("w", {2, 3}, view(values));
  writer.write(path);
  const SafetensorsFile file(path);
  BOOST_CHECK_EQUAL(file.read<float>("w", {2, 3}).size(), 6u);
  BOOST_CHECK_EXCEPTION(file.read<float>("w", {3, 2}), Error,
                        MessageHas(path, {"tensor 'w' has shape [2, 3], expected [3, 2]"}));
  BOOST_CHECK_EXCEPTION(file.read<float>("w", {6}), Error,
                        MessageHas(path, {"tensor 'w' has shape [2, 3], expected [6]"}));
}

BOOST_AUTO_TEST_CASE(missing_tensor_lookup) {
  TempDir tmp;
  const fs::path path = tmp.file("lookup.safetensors");
  const std::vector<float> values = {1};
  SafetensorsWriter writer;
  writer.add<float>("present", {1}, view(values));
  writer.write(path);
  const SafetensorsFile file(path);
  BOOST_CHECK(file.contains("present"));
  BOOST_CHECK(!file.contains("absent"));
  BOOST_CHECK_EXCEPTION(file.info("absent"), Error, MessageHas(path, {"no tensor 'absent'"}));
  BOOST_CHECK_EXCEPTION(file.bytes("absent"), Error, MessageHas(path, {"no tensor 'absent'"}));
  BOOST_CHECK_EXCEPTION(file.read<float>("absent"), Error,
                        MessageHas(path, {"no tensor 'absent'"}));
  BOOST_CHECK_EXCEPTION(file.read<float>("absent", {1}), Error,
                        MessageHas(path, {"no tensor 'absent'"}));
}

BOOST_AUTO_TEST_CASE(file_is_movable) {
  TempDir tmp;
  const fs::path path = tmp.file("move.safetensors");
  const std::vector<double> values = {2.5};
  SafetensorsWriter writer;
  writer.add<double>("v", {1}, view(values));
  writer.write(path);
  SafetensorsFile original(path);
  SafetensorsFile moved(std::move(original));
  BOOST_CHECK_EQUAL(moved.read<double>("v").at(0), 2.5);
  SafetensorsFile assigned(path);
  assigned = std::move(moved);
  BOOST_CHECK_EQUAL(assigned.read<double>("v").at(0), 2.5);
  BOOST_CHECK(assigned.path() == path);
}

BOOST_AUTO_TEST_CASE(writer_rejects_duplicates) {
  const std::vector<float> values = {1, 2};
  SafetensorsWriter writer;
  writer.add<float>("w", {2}, view(values));
  BOOST_CHECK_EXCEPTION(writer.add<float>("w", {2}, view(values)), Error,
                        MessageHas(std::string(), {"duplicate", "'w'"}));
  BOOST_CHECK_EXCEPTION(writer.add("w", DType::F32, {2}, std::as_bytes(view(values))), Error,
                        MessageHas(std::string(), {"duplicate", "'w'"}));
}

BOOST_AUTO_TEST_CASE(writer_rejects_size_mismatch_and_bad_names) {
  const std::vector<float> values = {1, 2, 3};
  SafetensorsWriter writer;
  BOOST_CHECK_EXCEPTION(writer.add<float>("w", {2, 2}, view(values)), Error,
                        MessageHas(std::string(), {"'w'", "[2, 2]", "F32", "16", "12"}));
  BOOST_CHECK_EXCEPTION(writer.add("w", DType::F64, {3}, std::as_bytes(view(values))), Error,
                        MessageHas(std::string(), {"'w'", "F64", "24", "12"}));
  BOOST_CHECK_EXCEPTION(writer.add<float>("w", {-3}, view(values)), Error,
                        MessageHas(std::string(), {"'w'", "negative"}));
  BOOST_CHECK_EXCEPTION(writer.add<float>("__metadata__", {3}, view(values)), Error,
                        MessageHas(std::string(), {"reserved"}));
  BOOST_CHECK_EXCEPTION(writer.add<float>("", {3}, view(values)), Error,
                        MessageHas(std::string(), {"empty"}));
  // Nothing was added by the failed calls, so a valid add of "w" succeeds.
  BOOST_CHECK_NO_THROW(writer.add<float>("w", {3}, view(values)));
}

BOOST_AUTO_TEST_CASE(writer_refuses_names_that_are_not_utf8) {
  TempDir tmp;
  const std::vector<float> values = {1, 2, 3};
  for (const bool in_metadata : {false, true}) {
    SafetensorsWriter writer;
    writer.add<float>(in_metadata ? "w" : "w\xff", {3}, view(values));
    if (in_metadata) writer.set_metadata("note", "\xc3(");
    BOOST_CHECK_EXCEPTION(writer.write(tmp.file("bad.safetensors")), Error,
                          MessageHas(std::string("SafetensorsWriter"), {"not valid UTF-8"}));
    BOOST_TEST(!fs::exists(tmp.file("bad.safetensors")));
  }
}

BOOST_AUTO_TEST_CASE(writer_reports_io_failure) {
  TempDir tmp;
  const fs::path path = tmp.file("no_such_dir") / "out.safetensors";
  SafetensorsWriter writer;
  BOOST_CHECK_EXCEPTION(writer.write(path), Error,
                        MessageHas(path.string() + ".tmp", {"No such file or directory"}));
}

BOOST_AUTO_TEST_CASE(open_reports_missing_file_and_directory) {
  TempDir tmp;
  const fs::path missing = tmp.file("missing.safetensors");
  BOOST_CHECK_EXCEPTION(SafetensorsFile{missing}, Error,
                        MessageHas(missing, {"cannot open", "No such file or directory"}));
  BOOST_CHECK_EXCEPTION(SafetensorsFile{tmp.dir}, Error,
                        MessageHas(tmp.dir, {"not a regular file"}));
}

// A file written by Python's safetensors library, embedded byte for byte. Generated once with
// /opt/kavenv/bin/python:
//
//   import torch
//   from safetensors.torch import save
//   data = save({"a": torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.float32),
//                "b": torch.tensor([1.0, -0.5, 256.0], dtype=torch.bfloat16),
//                "c": torch.tensor([7, -9], dtype=torch.int64)},
//               metadata={"format": "pt"})
//   for i in range(0, len(data), 16):
//       print("    " + " ".join(f"0x{x:02x}," for x in data[i:i+16]))
const unsigned char kPythonSafetensors[] = {
    0xc8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x5f, 0x5f, 0x6d, 0x65, 0x74, 0x61,
    0x64, 0x61, 0x74, 0x61, 0x5f, 0x5f, 0x22, 0x3a, 0x7b, 0x22, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74,
    0x22, 0x3a, 0x22, 0x70, 0x74, 0x22, 0x7d, 0x2c, 0x22, 0x63, 0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74,
    0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0x49, 0x36, 0x34, 0x22, 0x2c, 0x22, 0x73, 0x68, 0x61, 0x70,
    0x65, 0x22, 0x3a, 0x5b, 0x32, 0x5d, 0x2c, 0x22, 0x64, 0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66,
    0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, 0x30, 0x2c, 0x31, 0x36, 0x5d, 0x7d, 0x2c, 0x22, 0x61,
    0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0x46, 0x33, 0x32, 0x22,
    0x2c, 0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x5b, 0x32, 0x2c, 0x32, 0x5d, 0x2c, 0x22,
    0x64, 0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, 0x31,
    0x36, 0x2c, 0x33, 0x32, 0x5d, 0x7d, 0x2c, 0x22, 0x62, 0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74, 0x79,
    0x70, 0x65, 0x22, 0x3a, 0x22, 0x42, 0x46, 0x31, 0x36, 0x22, 0x2c, 0x22, 0x73, 0x68, 0x61, 0x70,
    0x65, 0x22, 0x3a, 0x5b, 0x33, 0x5d, 0x2c, 0x22, 0x64, 0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66,
    0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, 0x33, 0x32, 0x2c, 0x33, 0x38, 0x5d, 0x7d, 0x7d, 0x20,
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x80, 0x3e, 0x00, 0x00, 0x40, 0x40,
    0x80, 0x3f, 0x00, 0xbf, 0x80, 0x43,
};

BOOST_AUTO_TEST_CASE(reads_file_written_by_python_safetensors) {
  TempDir tmp;
  const fs::path path = tmp.file("python.safetensors");
  write_bytes(path, std::string(reinterpret_cast<const char*>(kPythonSafetensors),
                                sizeof kPythonSafetensors));
  const SafetensorsFile file(path);
  const std::vector<std::string> expected_names = {"a", "b", "c"};
  BOOST_TEST(file.names() == expected_names, boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(file.metadata().at("format"), "pt");
  BOOST_CHECK(file.info("a").dtype == DType::F32);
  BOOST_CHECK(file.info("b").dtype == DType::BF16);
  BOOST_CHECK(file.info("c").dtype == DType::I64);

  const auto a = file.read<float>("a", {2, 2});
  const std::vector<float> expected_a = {1.5f, -2.0f, 0.25f, 3.0f};
  BOOST_CHECK_EQUAL_COLLECTIONS(a.begin(), a.end(), expected_a.begin(), expected_a.end());
  const auto b = file.read<double>("b", {3});
  const std::vector<double> expected_b = {1.0, -0.5, 256.0};
  BOOST_CHECK_EQUAL_COLLECTIONS(b.begin(), b.end(), expected_b.begin(), expected_b.end());
  const auto c = file.read<std::int64_t>("c", {2});
  const std::vector<std::int64_t> expected_c = {7, -9};
  BOOST_CHECK_EQUAL_COLLECTIONS(c.begin(), c.end(), expected_c.begin(), expected_c.end());
}

// ---------------------------------------------------------------------------------------------
// Malformed files: every problem the header validation catches, each built from raw bytes.
// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(malformed_file_shorter_than_8_bytes) {
  TempDir tmp;
  const fs::path path = tmp.file("short.safetensors");
  write_bytes(path, std::string("\x02\x00\x00\x00\x00", 5));
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"5 bytes", "shorter than"}));
  write_bytes(path, "");
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"0 bytes", "shorter than"}));
}

BOOST_AUTO_TEST_CASE(malformed_header_length_beyond_file) {
  TempDir tmp;
  const fs::path path = tmp.file("long_header.safetensors");
  write_raw(path, 100, "{}", 4);  // 6 bytes after the length field
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"header length 100", "file size minus 8 (6)"}));
}

BOOST_AUTO_TEST_CASE(malformed_header_length_absurd) {
  TempDir tmp;
  const fs::path path = tmp.file("absurd.safetensors");
  write_raw(path, 100'000'001, "{}", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"header length 100000001", "limit"}));
  write_raw(path, ~std::uint64_t{0}, "{}", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"header length 18446744073709551615", "limit"}));
}

BOOST_AUTO_TEST_CASE(malformed_header_not_json) {
  TempDir tmp;
  const fs::path path = tmp.file("not_json.safetensors");
  write_raw(path, R"({"t": {"dtype": "F32",)", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"not valid JSON", "parse error"}));
  write_raw(path, "", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error, MessageHas(path, {"not valid JSON"}));
  write_raw(path, "{\"t\": \"\xff\xfe\"}", 0);  // invalid UTF-8
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error, MessageHas(path, {"not valid JSON"}));
  write_raw(path, R"({"t": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 0]}})", 0);  // out of range
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error, MessageHas(path, {"not valid JSON", "overflow"}));
}

BOOST_AUTO_TEST_CASE(malformed_header_not_object) {
  TempDir tmp;
  const fs::path path = tmp.file("array.safetensors");
  write_raw(path, "[1, 2, 3]", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error, MessageHas(path, {"not an object", "array"}));
  write_raw(path, "\"text\"", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"not an object", "string"}));
}

BOOST_AUTO_TEST_CASE(malformed_duplicate_key) {
  TempDir tmp;
  const fs::path path = tmp.file("duplicate.safetensors");
  write_raw(path,
            R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
            R"("t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
            2);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error, MessageHas(path, {"duplicate key 't'"}));
  // The same key in two different objects is fine.
  write_raw(path,
            R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
            R"("u":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
            2);
  BOOST_CHECK_NO_THROW(SafetensorsFile{path});
}

BOOST_AUTO_TEST_CASE(malformed_entry_not_object) {
  TempDir tmp;
  const fs::path path = tmp.file("entry.safetensors");
  write_single(path, "[0, 4]", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "not an object", "array"}));
  write_single(path, "7", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "not an object", "number"}));
}

BOOST_AUTO_TEST_CASE(malformed_entry_missing_dtype) {
  TempDir tmp;
  const fs::path path = tmp.file("no_dtype.safetensors");
  write_single(path, R"({"shape":[1],"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "missing \"dtype\""}));
}

BOOST_AUTO_TEST_CASE(malformed_entry_missing_shape) {
  TempDir tmp;
  const fs::path path = tmp.file("no_shape.safetensors");
  write_single(path, R"({"dtype":"F32","data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "missing \"shape\""}));
}

BOOST_AUTO_TEST_CASE(malformed_entry_missing_data_offsets) {
  TempDir tmp;
  const fs::path path = tmp.file("no_offsets.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[1]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "missing \"data_offsets\""}));
}

BOOST_AUTO_TEST_CASE(malformed_dtype_not_string) {
  TempDir tmp;
  const fs::path path = tmp.file("dtype_type.safetensors");
  write_single(path, R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"dtype\" is not a string"}));
}

BOOST_AUTO_TEST_CASE(malformed_shape_not_array) {
  TempDir tmp;
  const fs::path path = tmp.file("shape_type.safetensors");
  write_single(path, R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"shape\" is not an array"}));
}

BOOST_AUTO_TEST_CASE(malformed_shape_entry_negative) {
  TempDir tmp;
  const fs::path path = tmp.file("shape_negative.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(
      SafetensorsFile{path}, Error,
      MessageHas(path, {"tensor 't'", "\"shape\"", "non-negative integers", "-1"}));
}

BOOST_AUTO_TEST_CASE(malformed_shape_entry_not_integer) {
  TempDir tmp;
  const fs::path path = tmp.file("shape_float.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(
      SafetensorsFile{path}, Error,
      MessageHas(path, {"tensor 't'", "\"shape\"", "non-negative integers", "1.5"}));
  write_single(path, R"({"dtype":"F32","shape":["1"],"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"shape\"", "non-negative integers"}));
  write_single(path, R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"shape\"", "non-negative integers"}));
}

BOOST_AUTO_TEST_CASE(malformed_data_offsets_wrong_count) {
  TempDir tmp;
  const fs::path path = tmp.file("offsets_count.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", 8);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"data_offsets\"", "exactly two"}));
  write_single(path, R"({"dtype":"F32","shape":[1],"data_offsets":[4]})", 8);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"data_offsets\"", "exactly two"}));
  write_single(path, R"({"dtype":"F32","shape":[1],"data_offsets":{"a":0,"b":4}})", 8);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"data_offsets\"", "exactly two"}));
}

BOOST_AUTO_TEST_CASE(malformed_data_offsets_negative_or_not_integer) {
  TempDir tmp;
  const fs::path path = tmp.file("offsets_negative.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", 8);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"data_offsets\"", "non-negative"}));
  write_single(path, R"({"dtype":"F32","shape":[1],"data_offsets":[0,4.0]})", 8);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "\"data_offsets\"", "non-negative"}));
}

BOOST_AUTO_TEST_CASE(malformed_data_offsets_begin_after_end) {
  TempDir tmp;
  const fs::path path = tmp.file("offsets_order.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})", 8);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "begin 8 is after end 4"}));
}

BOOST_AUTO_TEST_CASE(malformed_unknown_dtype) {
  TempDir tmp;
  const fs::path path = tmp.file("dtype.safetensors");
  write_single(path, R"({"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]})", 4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "unknown dtype 'F8_E4M3'",
                                          "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"}));
}

BOOST_AUTO_TEST_CASE(malformed_size_mismatch) {
  TempDir tmp;
  const fs::path path = tmp.file("size.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,20]})", 24);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "[2, 3]", "F32", "24 bytes", "20 bytes"}));
}

BOOST_AUTO_TEST_CASE(malformed_shape_product_overflow) {
  TempDir tmp;
  const fs::path path = tmp.file("overflow.safetensors");
  // 2^32 * 2^32 wraps to 0 in u64, which would match the empty span without the guard.
  write_single(path, R"({"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]})", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "[4294967296, 4294967296]", "overflow"}));
  // The element size alone pushes it over.
  write_single(path, R"({"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]})", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "F64", "overflow"}));
  // A zero extent makes the product 0 however large the others are.
  write_single(path, R"({"dtype":"F64","shape":[9223372036854775807,0,9],"data_offsets":[0,0]})",
               0);
  BOOST_CHECK_NO_THROW(SafetensorsFile{path});
}

BOOST_AUTO_TEST_CASE(malformed_span_beyond_data_area) {
  TempDir tmp;
  const fs::path path = tmp.file("beyond.safetensors");
  write_single(path, R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})", 10);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "beyond the data area of 10 bytes"}));
  // Huge offsets must not wrap around.
  write_single(path,
               R"({"dtype":"U8","shape":[1],)"
               R"("data_offsets":[18446744073709551614,18446744073709551615]})",
               10);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"tensor 't'", "beyond the data area of 10 bytes"}));
}

BOOST_AUTO_TEST_CASE(malformed_overlapping_tensors) {
  TempDir tmp;
  const fs::path path = tmp.file("overlap.safetensors");
  write_raw(path,
            R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            12);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"'first'", "'second'", "overlap"}));
  // One span fully inside a longer one, with a third tensor in between in sort order.
  write_raw(path,
            R"({"long":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
            R"("mid":{"dtype":"U8","shape":[2],"data_offsets":[16,18]},)"
            R"("inner":{"dtype":"U8","shape":[2],"data_offsets":[10,12]}})",
            18);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"'long'", "'inner'", "overlap"}));
  // Identical spans overlap too.
  write_raw(path,
            R"({"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
            R"("y":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
            4);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error, MessageHas(path, {"'x'", "'y'", "overlap"}));
  // Touching spans do not overlap.
  write_raw(path,
            R"({"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
            R"("y":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
            8);
  BOOST_CHECK_NO_THROW(SafetensorsFile{path});
}

BOOST_AUTO_TEST_CASE(malformed_metadata_not_object) {
  TempDir tmp;
  const fs::path path = tmp.file("metadata.safetensors");
  write_raw(path, R"({"__metadata__":["format","pt"]})", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"__metadata__", "not an object of strings", "array"}));
}

BOOST_AUTO_TEST_CASE(malformed_metadata_value_not_string) {
  TempDir tmp;
  const fs::path path = tmp.file("metadata_value.safetensors");
  write_raw(path, R"({"__metadata__":{"format":"pt","epochs":3}})", 0);
  BOOST_CHECK_EXCEPTION(
      SafetensorsFile{path}, Error,
      MessageHas(path, {"__metadata__", "not an object of strings", "'epochs'", "number"}));
  write_raw(path, R"({"__metadata__":{"nested":{"a":"b"}}})", 0);
  BOOST_CHECK_EXCEPTION(SafetensorsFile{path}, Error,
                        MessageHas(path, {"__metadata__", "not an object of strings", "'nested'"}));
}
