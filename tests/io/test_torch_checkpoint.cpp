#define BOOST_TEST_MODULE torch_checkpoint
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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

namespace {
/// Each fixture in @p names cut short at every length, then with each byte changed in turn,
/// is given to @p read: it reads, or throws kadapter::Error (never a crash, a hang or another
/// exception); no truncated file reads.
template <class F>
void damage_each(std::initializer_list<const char*> names, F&& read) {
  test::TempDir tmp("kadapter_torch_");
  for (const char* name : names) {
    const auto good = bytes_of(kDir / name);
    std::size_t errors = 0, reads = 0;
    auto attempt = [&](const std::vector<char>& b) {
      write_bytes(tmp.path / "x.pt", b);
      try {
        read(tmp.path / "x.pt");
        ++reads;
      } catch (const Error&) {
        ++errors;
      }
    };
    for (std::size_t n = 0; n < good.size(); ++n) attempt(std::vector<char>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)));
    BOOST_TEST(reads == 0u, name << ": a truncated file was read");
    for (std::size_t k = 0; k < good.size(); ++k) {
      auto b = good;
      b[k] = static_cast<char>(b[k] ^ 0x5a);
      attempt(b);
    }
    BOOST_TEST_MESSAGE(name << ": " << errors << " errors, " << reads << " read");
  }
}
}  // namespace

BOOST_AUTO_TEST_CASE(every_truncation_and_corrupted_byte_is_an_error_or_a_checkpoint) {
  damage_each({"state_legacy.pt", "state_zip.pt"}, [](const fs::path& p) { io::TorchCheckpoint c(p); });
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

// The K-Adapter authors' training_args.bin: an argparse.Namespace saved with torch.save
// (tests/fixtures/torch/make_args_fixtures.py); training_args_expected.json is what Python
// itself makes of each Namespace.
BOOST_AUTO_TEST_CASE(saved_arguments_read_as_json_as_python_gives_them) {
  std::ifstream f(kDir / "training_args_expected.json");
  const auto want = nlohmann::json::parse(f);
  for (const char* name : {"training_args_fac.bin", "training_args_lin_zip.bin"}) {
    const nlohmann::json got = io::read_torch_object(kDir / name);
    BOOST_TEST(got == want.at(name), name << ":\n" << got.dump(1));
  }
  // A Namespace is not a state dict.
  refused(kDir / "training_args_fac.bin", "the saved object is not a dict (expected a state dict)");
}

BOOST_AUTO_TEST_CASE(a_state_dict_reads_as_json_with_tensors_as_their_shapes) {
  std::ifstream f(kDir / "expected.json");
  const auto want = nlohmann::json::parse(f);
  for (const char* name : {"state_legacy.pt", "state_zip.pt", "state_legacy_p4.pt"}) {
    const nlohmann::json got = io::read_torch_object(kDir / name);
    for (const auto& [tensor, t] : want.at("tensors").items()) {
      const auto dot = tensor.find('.');
      const nlohmann::json& g = tensor.starts_with("nested.") ? got.at("nested").at(tensor.substr(dot + 1)) : got.at(tensor);
      BOOST_TEST(g == nlohmann::json({{"__class__", "torch.Tensor"}, {"dtype", t.at("dtype")}, {"shape", t.at("shape")}}),
                 name << " " << tensor << ": " << g.dump());
    }
    BOOST_TEST(got.at("epoch") == 3);
    BOOST_TEST(got.at("note") == "not a tensor");
    BOOST_TEST(got.at("args") == nlohmann::json({{"__class__", "argparse.Namespace"}, {"learning_rate", 1e-4}, {"adapter_list", "0,11,22"}}),
               got.at("args").dump());
  }
}

namespace {
/// A legacy-format file whose object pickle is @p object (protocol 2, without PROTO/STOP).
void write_legacy(const fs::path& p, const std::string& object) {
  const std::string magic("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
  const std::string version("\x80\x02M\xe9\x03.", 6), info("\x80\x02}.", 4), keys("\x80\x02].", 4);
  const std::string all = magic + version + info + std::string("\x80\x02", 2) + object + "." + keys;
  write_bytes(p, std::vector<char>(all.begin(), all.end()));
}

/// read_torch_object(@p p) throws an Error that says @p words.
void object_refused(const fs::path& p, const std::string& words) {
  try {
    (void)io::read_torch_object(p);
    BOOST_ERROR(p.string() << " was read, expected an error saying: " << words);
  } catch (const Error& e) {
    BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
  }
}
}  // namespace

BOOST_AUTO_TEST_CASE(objects_that_would_not_end_are_refused) {
  test::TempDir tmp("kadapter_torch_");
  write_legacy(tmp.path / "ok.pt", "(K\x01K\x02l");  // [1, 2]: the hand-made container is right
  BOOST_TEST(io::read_torch_object(tmp.path / "ok.pt") == nlohmann::json({1, 2}));
  write_legacy(tmp.path / "self.pt", std::string("]q\x00h\x00" "a", 6));  // a list that contains itself
  object_refused(tmp.path / "self.pt", "nested more than 64 deep (or an object that contains itself)");
  // A list of the same list twice, 40 times over: 2^40 values from a few hundred bytes.
  std::string bomb("]q\x00" "0", 4);  // EMPTY_LIST, BINPUT 0, POP
  for (int k = 0; k < 40; ++k) bomb += std::string("(h\x00h\x00lq\x00" "0", 9);  // memo 0 = [memo 0, memo 0]
  bomb += std::string("h\x00", 2);
  write_legacy(tmp.path / "bomb.pt", bomb);
  object_refused(tmp.path / "bomb.pt", "expands to too much JSON");
}

BOOST_AUTO_TEST_CASE(shared_values_do_not_multiply_memory) {
  test::TempDir tmp("kadapter_torch_");
  auto le32 = [](std::uint32_t x) {
    std::string b(4, '\0');
    for (int k = 0; k < 4; ++k) b[static_cast<std::size_t>(k)] = static_cast<char>((x >> (8 * k)) & 0xff);
    return b;
  };
  // One string of 100 kB referenced 2000 times: 200 MB of JSON from a 100 kB file.
  std::string strings = le32(100000);
  strings.insert(strings.begin(), 'X');
  strings += std::string(100000, 'a');
  strings += std::string("q\x00" "0(", 4);
  for (int k = 0; k < 2000; ++k) strings += std::string("h\x00", 2);
  strings += "l";
  write_legacy(tmp.path / "strings.pt", strings);
  object_refused(tmp.path / "strings.pt", "expands to too much JSON");
  // A dict of 30000 objects made by one class (REDUCE, or NEWOBJ) with one shared tuple of
  // 30000 arguments: the objects share the tuple (a copy each would take 7 GB). Read, as a
  // state dict and as JSON, in a child process that may take 2 GiB more than it has.
  for (const char* call : {"R", "\x81"}) {
    std::string objects = std::string("cargparse\nNamespace\nq\x00" "0(", 24);
    for (int k = 0; k < 30000; ++k) objects += "K\x01";
    objects += std::string("tq\x01" "0}(", 6);
    for (std::uint32_t k = 0; k < 30000; ++k) {
      objects += 'J';
      objects += le32(k);
      objects += std::string("h\x00h\x01", 4) + call;
    }
    objects += "u";
    write_legacy(tmp.path / "objects.pt", objects);
    const pid_t child = ::fork();
    BOOST_TEST_REQUIRE(child >= 0);
    if (child == 0) {
      long pages = 0;
      std::ifstream("/proc/self/statm") >> pages;
      const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (rlim_t{2} << 30);
      const rlimit lim{limit, limit};
      int code = 0;
      if (::setrlimit(RLIMIT_AS, &lim) != 0) std::_Exit(7);
      try {
        io::TorchCheckpoint c(tmp.path / "objects.pt");
        code = 1;
      } catch (const Error& e) {
        if (std::string(e.what()).find("the state dict holds no tensor") == std::string::npos) code = 2;
      } catch (...) {
        code = 3;  // std::bad_alloc: the 2 GiB did not suffice
      }
      try {
        (void)io::read_torch_object(tmp.path / "objects.pt");
        code = code ? code : 4;
      } catch (const Error& e) {
        if (std::string(e.what()).find("expands to too much JSON") == std::string::npos) code = code ? code : 5;
      } catch (...) {
        code = code ? code : 6;
      }
      std::_Exit(code);
    }
    int status = 0;
    BOOST_TEST_REQUIRE(::waitpid(child, &status, 0) == child);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 0, (call[0] == 'R' ? "REDUCE" : "NEWOBJ")
                                             << ": exit " << WEXITSTATUS(status)
                                             << " (state dict: 1 read, 2 another error, 3 out of memory; JSON: 4 read, 5 another "
                                                "error, 6 out of memory; 7 no limit)");
  }
}

BOOST_AUTO_TEST_CASE(other_python_values_read_as_json) {
  test::TempDir tmp("kadapter_torch_");
  // A pickle literal with its NUL bytes (length from the array).
  auto P = []<std::size_t N>(const char (&s)[N]) { return std::string(s, N - 1); };
  auto json_of = [&](const std::string& object) {
    write_legacy(tmp.path / "v.pt", object);
    return io::read_torch_object(tmp.path / "v.pt");
  };
  using J = nlohmann::json;
  const J bytes3 = {{"__class__", "bytes"}, {"size", 3}}, bytes0 = {{"__class__", "bytes"}, {"size", 0}};
  BOOST_TEST(json_of(P("C\x03" "abc")) == bytes3);                                  // SHORT_BINBYTES (protocol 3)
  BOOST_TEST(json_of(P("B\x03\x00\x00\x00" "abc")) == bytes3);                      // BINBYTES
  BOOST_TEST(json_of(P("c__builtin__\nbytes\n)R")) == bytes0);                        // b"" (protocol 2)
  BOOST_TEST(json_of(P("c_codecs\nencode\nX\x04\x00\x00\x00\xc3\xbf" "abX\x06\x00\x00\x00" "latin1\x86R")) == bytes3);  // b"\xffab"
  BOOST_TEST(json_of(P("\x8f(K\x01K\x02\x90")) == J({1, 2}));                          // a set
  BOOST_TEST(json_of(P("(K\x01\x91")) == J({1}));                                       // a frozenset
  BOOST_TEST(json_of(P("cpathlib\nPosixPath\n)R")) == ".");
  BOOST_TEST(json_of(P("cpathlib\nPosixPath\nX\x01\x00\x00\x00/X\x01\x00\x00\x00" "a\x86R")) == "/a");
  BOOST_TEST(json_of(P("ctorch\ndevice\nX\x04\x00\x00\x00" "cudaK\x01\x86R")) == "cuda:1");
  // The class marker wins over an attribute of that name.
  BOOST_TEST(json_of(P("cargparse\nNamespace\n)\x81}(X\x09\x00\x00\x00" "__class__K\x01ub")) == J({{"__class__", "argparse.Namespace"}}));
  // A dict key that is not a string or an integer is refused, whichever opcode builds it.
  write_legacy(tmp.path / "key.pt", P("()K\x01" "d"));
  refused(tmp.path / "key.pt", "a dict key that is not a string or an integer");
}

BOOST_AUTO_TEST_CASE(every_truncation_and_corrupted_byte_of_saved_arguments_is_an_error_or_json) {
  // What is read is valid JSON: it dumps.
  damage_each({"training_args_fac.bin", "training_args_lin_zip.bin"}, [](const fs::path& p) { (void)io::read_torch_object(p).dump(); });
}
