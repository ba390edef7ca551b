// `kadapter encode`: run the frozen encoder on a batch and write every hidden state.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "kadapter/kadapter.hpp"

namespace kadapter::cli {

namespace detail {

/// A (B, T) integer tensor of a batch file, checked and widened to int64.
inline std::vector<std::int64_t> read_token_field(const io::SafetensorsFile& f,
                                                  const std::string& field, index_t& batch,
                                                  index_t& seq) {
  const std::string where = f.path().string() + ": tensor '" + field + "'";
  if (!f.contains(field)) throw Error(f.path().string() + ": missing tensor '" + field + "'");
  const auto& info = f.info(field);
  if (info.dtype != DType::I64 && info.dtype != DType::I32)
    throw Error(where + " has dtype " + std::string(dtype_name(info.dtype)) + ", expected I64");
  if (info.shape.size() != 2)
    throw Error(where + " has shape " + info.shape_string() + ", expected (B, T)");
  if (batch < 0) {
    batch = info.shape[0];
    seq = info.shape[1];
  } else if (info.shape[0] != batch || info.shape[1] != seq) {
    throw Error(where + " has shape " + info.shape_string() + ", expected [" +
                std::to_string(batch) + ", " + std::to_string(seq) + "] like input_ids");
  }
  return f.read<std::int64_t>(field);
}

}  // namespace detail

inline int run_encode(const std::vector<std::string>& argv) {
  Args args("encode",
            {{"model", "DIR", "model directory with config.json and model.safetensors", true, ""},
             {"batch", "IN.safetensors", "input_ids and attention_mask (I64, (B, T)); optional token_type_ids", true, ""},
             {"out", "OUT.safetensors", "receives hidden_states.K (F32, (B, T, H)) for K = 0..L", true, ""},
             {"positions", "huggingface|official", "position numbering: current HuggingFace, or the K-Adapter authors' (2..T+1 for every row, padding included)", false, "huggingface"},
             {"states", "LIST", "comma-separated hidden-state indices to write (default: all)", false, ""},
             {"dtype", "fp32|fp64", "compute precision (the output is F32 either way; f32 and f64 are accepted too)", false, "fp32"},
             {"threads", "N", "threads for the matrix products (0: library default)", false, "0"}},
            argv);
  if (args.help()) {
    std::fputs(args.usage().c_str(), stdout);
    return 0;
  }
  const std::string positions = args.choice("positions", {"huggingface", "official"});
  std::string dtype = args.choice("dtype", {"fp32", "fp64", "f32", "f64"});
  if (dtype.starts_with("fp")) dtype.erase(1, 1);  // f32 or f64 from here on (the output's metadata)
  const int threads = static_cast<int>(args.integer("threads", 0, 1024));
  if (threads > 0) Eigen::setNbThreads(threads);
  std::vector<index_t> keep;
  if (args.has("states"))
    for (long long k : args.integer_list("states")) keep.push_back(static_cast<index_t>(k));

  io::SafetensorsFile batch_file(args.get("batch"));
  index_t B = -1, T = -1;
  const auto ids = detail::read_token_field(batch_file, "input_ids", B, T);
  const auto mask = detail::read_token_field(batch_file, "attention_mask", B, T);
  std::vector<std::int64_t> types;
  if (batch_file.contains("token_type_ids"))
    types = detail::read_token_field(batch_file, "token_type_ids", B, T);
  const TokenBatch batch{B, T, ids, mask, types};
  ForwardOptions opt;
  opt.positions = positions == "official" ? PositionScheme::official : PositionScheme::huggingface;
  const std::string out_path = args.get("out");

  auto encode = [&](auto& enc, const io::EncoderLoadReport&) {
    using T_ = typename std::remove_reference_t<decltype(enc)>::scalar_type;
    HiddenStates<T_> states(enc.config().layers, keep);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      enc.forward(states, batch, opt);
    } catch (const Error& e) {
      throw Error(batch_file.path().string() + ": " + e.what());
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    io::SafetensorsWriter writer;
    const std::vector<std::int64_t> shape{B, T, enc.config().hidden};
    for (index_t k : states.kept()) {
      auto s = states[k].span();
      std::vector<float> data(s.begin(), s.end());
      writer.add<float>("hidden_states." + std::to_string(k), shape, std::span<const float>(data));
    }
    writer.set_metadata("model", args.get("model"));
    writer.set_metadata("positions", positions);
    writer.set_metadata("compute_dtype", dtype);
    writer.write(out_path);
    std::fprintf(stderr, "encoded %lld x %lld tokens with the %s encoder (%s) in %.1f ms; wrote %zu hidden states to %s\n",
                 static_cast<long long>(B), static_cast<long long>(T),
                 preset_name(enc.config()).c_str(), dtype.c_str(), ms, states.kept().size(),
                 out_path.c_str());
    return 0;
  };
  if (dtype == "f64") return io::with_encoder_dir<double>(args.get("model"), encode);
  return io::with_encoder_dir<float>(args.get("model"), encode);
}

}  // namespace kadapter::cli
