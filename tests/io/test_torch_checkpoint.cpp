#define BOOST_TEST_MODULE torch_checkpoint
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kadapter/core/dtype.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/io/safetensors.hpp"
#include "kadapter/io/torch_checkpoint.hpp"
#include "support/run_program.hpp"

// Checkpoints written by torch.save (tests/fixtures/torch/make_torch_fixtures.py, torch 1.13):
// the same state dict in the zip format and in the legacy format of torch < 1.6.

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

const fs::path kDir = fs::path(KA_FIXTURE_DIR) / "torch";

std::vector<char> bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void write_bytes(const fs::path& p, const std::vector<char>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

/// Replace every @p from in @p b with @p to (any length: the legacy format has no offsets).
std::size_t replace_all(std::vector<char>& b, const std::string& from, const std::string& to) {
  std::string s(b.begin(), b.end());
  std::size_t n = 0;
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()), ++n) s.replace(at, from.size(), to);
  b.assign(s.begin(), s.end());
  return n;
}

/// The elements of @p t as doubles.
std::vector<double> values_of(const io::TorchTensor& t) {
  std::vector<double> out;
  const std::size_t es = dtype_size(t.dtype);
  for (std::size_t k = 0; k < t.data.size() / es; ++k) {
    const std::byte* p = t.data.data() + k * es;
    auto get = [&](auto v) {
      std::memcpy(&v, p, sizeof v);
      return v;
    };
    switch (t.dtype) {
      case DType::F32: out.push_back(get(float{})); break;
      case DType::F64: out.push_back(get(double{})); break;
      case DType::F16: out.push_back(static_cast<float>(get(half{}))); break;
      case DType::BF16: out.push_back(static_cast<float>(get(bfloat16{}))); break;
      case DType::I64: out.push_back(static_cast<double>(get(std::int64_t{}))); break;
      case DType::I32: out.push_back(get(std::int32_t{})); break;
      case DType::BOOL: out.push_back(get(std::uint8_t{})); break;
      default: BOOST_FAIL("unexpected dtype");
    }
  }
  return out;
}

/// Everything in expected.json holds for @p c.
void check_against_expected(const io::TorchCheckpoint& c) {
  std::ifstream f(kDir / "expected.json");
  const auto want = nlohmann::json::parse(f);
  std::vector<std::string> names;
  for (const auto& [name, t] : want.at("tensors").items()) names.push_back(name);
  // expected.json lists the tensors in the state dict's order (nlohmann sorts keys: compare sets).
  std::vector<std::string> got = c.names();
  std::sort(got.begin(), got.end());
  std::sort(names.begin(), names.end());
  BOOST_TEST(got == names, boost::test_tools::per_element());
  BOOST_TEST(c.skipped() == want.at("skipped").get<std::vector<std::string>>(), boost::test_tools::per_element());
  for (const auto& [name, w] : want.at("tensors").items()) {
    BOOST_TEST_CONTEXT(c.format() << " " << name) {
      const auto& t = c.tensor(name);
      BOOST_TEST(std::string(dtype_name(t.dtype)) == w.at("dtype").get<std::string>());
      BOOST_TEST(t.shape == w.at("shape").get<std::vector<std::int64_t>>(), boost::test_tools::per_element());
      const auto v = values_of(t);
      const auto e = w.at("values").get<std::vector<double>>();
      BOOST_TEST(v == e, boost::test_tools::per_element());  // exact: the same bits
    }
  }
}

void refused(const fs::path& p, const std::string& words) {
  try {
    io::TorchCheckpoint c(p);
    BOOST_ERROR(p.string() << " accepted; expected an error saying: " << words);
  } catch (const Error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find(p.string()) != std::string::npos, what);
    BOOST_TEST(what.find(words) != std::string::npos, what);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(both_formats_read_every_tensor_exactly) {
  const io::TorchCheckpoint zip(kDir / "state_zip.pt"), legacy(kDir / "state_legacy.pt"), p4(kDir / "state_legacy_p4.pt");
  BOOST_TEST(zip.format() == "zip");
  BOOST_TEST(legacy.format() == "legacy");
  BOOST_TEST(p4.format() == "legacy");  // pickle protocol 4: frames, SHORT_BINUNICODE, MEMOIZE
  check_against_expected(zip);
  check_against_expected(legacy);
  check_against_expected(p4);
  BOOST_TEST(p4.names() == legacy.names(), boost::test_tools::per_element());
  // The state dict's order is kept.
  BOOST_TEST(zip.names() == legacy.names(), boost::test_tools::per_element());
  BOOST_TEST(zip.names().front() == "adapter.0.down_project.weight");
  BOOST_TEST(zip.names().back() == "nested.inner");
}

BOOST_AUTO_TEST_CASE(a_zip64_directory_is_followed) {
  // Archives over 4 GiB give the central directory's offset only in the zip64 record (torch
  // writes one always): with the 32-bit field set to 0xFFFFFFFF, the same tensors are read.
  test::TempDir tmp("kadapter_torch_");
  auto b = bytes_of(kDir / "state_zip.pt");
  const std::string s(b.begin(), b.end());
  const std::size_t eocd = s.rfind(std::string("PK\x05\x06", 4));
  BOOST_TEST_REQUIRE(eocd != std::string::npos);
  BOOST_TEST_REQUIRE(s.compare(eocd - 20, 4, std::string("PK\x06\x07", 4)) == 0);  // the zip64 locator
  for (std::size_t k = 16; k < 20; ++k) b[eocd + k] = static_cast<char>(0xFF);
  write_bytes(tmp.path / "zip64.pt", b);
  check_against_expected(io::TorchCheckpoint(tmp.path / "zip64.pt"));
  b[eocd - 20] = 'X';  // no locator: refused
  write_bytes(tmp.path / "nolocator.pt", b);
  refused(tmp.path / "nolocator.pt", "zip64 fields without a zip64 locator");
}

BOOST_AUTO_TEST_CASE(converts_to_safetensors_under_the_same_names) {
  test::TempDir tmp("kadapter_torch_");
  const fs::path out = tmp.path / "adapter.safetensors";
  const io::TorchCheckpoint c = io::convert_torch_checkpoint(kDir / "state_legacy.pt", out, {{"task", "fac"}});
  const io::SafetensorsFile f(out);
  BOOST_TEST(f.names().size() == c.names().size());
  for (const auto& name : c.names()) {
    BOOST_TEST_CONTEXT(name) {
      const auto& t = c.tensor(name);
      BOOST_TEST_REQUIRE(f.contains(name));
      BOOST_TEST((f.info(name).dtype == t.dtype));
      BOOST_TEST(f.info(name).shape == t.shape, boost::test_tools::per_element());
      const auto raw = f.bytes(name);
      BOOST_TEST(std::vector<std::byte>(raw.begin(), raw.end()) == t.data);
    }
  }
  BOOST_TEST(f.metadata().at("converted_from") == "state_legacy.pt");
  BOOST_TEST(f.metadata().at("task") == "fac");
}

BOOST_AUTO_TEST_CASE(a_checkpoint_saved_from_the_gpu_reads_the_same) {
  // Saved from CUDA tensors, the storage classes are torch.cuda.*Storage (location cuda:0).
  test::TempDir tmp("kadapter_torch_");
  auto b = bytes_of(kDir / "state_legacy.pt");
  BOOST_TEST_REQUIRE(replace_all(b, "ctorch\nFloatStorage\n", "ctorch.cuda\nFloatStorage\n") == 1u);  // memoised after
  BOOST_TEST_REQUIRE(replace_all(b, std::string("X\x03\0\0\0cpu", 8), std::string("X\x06\0\0\0cuda:0", 11)) > 0u);
  write_bytes(tmp.path / "gpu.pt", b);
  check_against_expected(io::TorchCheckpoint(tmp.path / "gpu.pt"));
}

BOOST_AUTO_TEST_CASE(what_is_not_a_state_dict_is_refused_by_name) {
  test::TempDir tmp("kadapter_torch_");
  refused(tmp.path / "missing.pt", "cannot open");
  write_bytes(tmp.path / "text.pt", {'h', 'e', 'l', 'l', 'o'});
  refused(tmp.path / "text.pt", "not a PyTorch checkpoint");

  auto legacy = bytes_of(kDir / "state_legacy.pt");
  auto b = legacy;
  BOOST_TEST_REQUIRE(replace_all(b, "_rebuild_tensor_v2", "_rebuild_tensor_v9") == 1u);
  write_bytes(tmp.path / "callable.pt", b);
  refused(tmp.path / "callable.pt", "calls torch._utils._rebuild_tensor_v9");
  b = legacy;
  BOOST_TEST_REQUIRE(replace_all(b, "ctorch\nFloatStorage\n", "ctorch\nQUInt8Storage\n") == 1u);
  write_bytes(tmp.path / "class.pt", b);
  refused(tmp.path / "class.pt", "storage class torch.QUInt8Storage is not supported");
  b = legacy;
  b.resize(b.size() - 5);
  write_bytes(tmp.path / "short.pt", b);
  refused(tmp.path / "short.pt", "truncated?");
  b = legacy;
  b[5] ^= 1;  // inside the magic number
  write_bytes(tmp.path / "magic.pt", b);
  refused(tmp.path / "magic.pt", "not torch's magic number");

  // A zip entry compressed (method 8): torch.save never does, and it is not inflated here.
  auto zip = bytes_of(kDir / "state_zip.pt");
  const std::string central("PK\x01\x02", 4);
  const std::size_t at = std::string(zip.begin(), zip.end()).find(central);
  BOOST_TEST_REQUIRE(at != std::string::npos);
  zip[at + 10] = 8;
  write_bytes(tmp.path / "deflated.pt", zip);
  refused(tmp.path / "deflated.pt", "is compressed (method 8)");
}

BOOST_AUTO_TEST_CASE(every_truncation_and_corrupted_byte_is_an_error_or_a_checkpoint) {
  // Cut short at every length, or with any one byte changed, a file reads as a checkpoint or
  // throws kadapter::Error: never a crash, a hang or another exception.
  test::TempDir tmp("kadapter_torch_");
  for (const char* name : {"state_legacy.pt", "state_zip.pt"}) {
    const auto good = bytes_of(kDir / name);
    std::size_t errors = 0, read = 0;
    auto attempt = [&](const std::vector<char>& b) {
      write_bytes(tmp.path / "x.pt", b);
      try {
        io::TorchCheckpoint c(tmp.path / "x.pt");
        ++read;
      } catch (const Error&) {
        ++errors;
      }
    };
    for (std::size_t n = 0; n < good.size(); ++n) attempt(std::vector<char>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)));
    BOOST_TEST(read == 0u, name << ": a truncated file was read");
    for (std::size_t k = 0; k < good.size(); ++k) {
      auto b = good;
      b[k] = static_cast<char>(b[k] ^ 0x5a);
      attempt(b);
    }
    BOOST_TEST_MESSAGE(name << ": " << errors << " errors, " << read << " read");
  }
}

BOOST_AUTO_TEST_CASE(an_authors_format_fac_checkpoint_converts_to_the_parity_weights) {
  // The fac parity fixture's weights (a fac model under the authors' state_dict names, which
  // test_official_parity runs against the authors' computation) saved as a legacy
  // pytorch_model.bin: converted, every tensor is the same, bit for bit.
  test::TempDir tmp("kadapter_torch_");
  const fs::path out = tmp.path / "model.safetensors";
  (void)io::convert_torch_checkpoint(kDir / "fac_official_legacy.bin", out);
  const io::SafetensorsFile got(out), want(fs::path(KA_FIXTURE_DIR) / "adapter" / "fac_official" / "adapter.safetensors");
  BOOST_TEST(got.names() == want.names(), boost::test_tools::per_element());
  BOOST_TEST(got.contains("adapter.0.down_project.weight"));
  for (const auto& name : want.names()) {
    BOOST_TEST_CONTEXT(name) {
      BOOST_TEST_REQUIRE(got.contains(name));
      BOOST_TEST(got.info(name).shape == want.info(name).shape, boost::test_tools::per_element());
      const auto a = got.bytes(name), b = want.bytes(name);
      BOOST_TEST(std::vector<std::byte>(a.begin(), a.end()) == std::vector<std::byte>(b.begin(), b.end()));
    }
  }
}

BOOST_AUTO_TEST_CASE(deep_nesting_and_many_keys_are_read_without_recursion) {
  // A legacy file made by hand: the magic number, the protocol version, an empty system-info
  // dict, the object pickle, an empty storage-key list.
  test::TempDir tmp("kadapter_torch_");
  auto file_with = [&](const std::string& object) {
    std::string b = std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15) + std::string("\x80\x02M\xe9\x03.", 6) +
                    std::string("\x80\x02}.", 4) + "\x80\x02" + object + "." + std::string("\x80\x02].", 4);
    write_bytes(tmp.path / "x.pt", std::vector<char>(b.begin(), b.end()));
    return tmp.path / "x.pt";
  };
  // A million tuples, each in the next: values are owned by an arena, so nothing recurses.
  refused(file_with("N" + std::string(1000000, '\x85')), "the saved object is not a dict");
  // 200,000 keys in one dict: each SETITEMS pair is appended, not searched for.
  std::string keys = "}(";
  for (std::uint32_t k = 0; k < 200000; ++k) {
    keys += 'J';
    for (int b = 0; b < 4; ++b) keys += static_cast<char>((k >> (8 * b)) & 0xff);
    keys += 'N';
  }
  refused(file_with(keys + "u"), "the state dict holds no tensor");
  // A dict inside itself: nested more than 32 deep when its names are collected.
  refused(file_with(std::string("}q\x00X\x01\x00\x00\x00" "ah\x00s", 12)), "dicts nested more than 32 deep");
}

BOOST_AUTO_TEST_CASE(a_key_that_is_not_utf8_is_refused) {
  // A pickled bytes key (SHORT_BINSTRING) may hold any byte; safetensors names are UTF-8 JSON.
  test::TempDir tmp("kadapter_torch_");
  const std::string b = std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15) + std::string("\x80\x02M\xe9\x03.", 6) +
                        std::string("\x80\x02}.", 4) + std::string("\x80\x02}(U\x02\xff\xfeNu.", 11) + std::string("\x80\x02].", 4);
  write_bytes(tmp.path / "x.pt", std::vector<char>(b.begin(), b.end()));
  refused(tmp.path / "x.pt", "a key of the state dict: invalid UTF-8 at byte offset 0");
}
