// `kadapter convert`: a PyTorch checkpoint (torch.save of a state dict, such as the K-Adapter
// authors' released pytorch_model.bin) as a safetensors file under the same tensor names.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "kadapter/kadapter.hpp"

namespace kadapter::cli {

inline int run_convert(const std::vector<std::string>& argv) {
  Args args("convert",
            {{"in", "FILE", "a PyTorch checkpoint: torch.save of a state dict (zip format, or the legacy format of torch < 1.6)", true, ""},
             {"out", "OUT.safetensors", "the tensors under the same names and element types (a pre-trained adapter: DIR/model.safetensors, for --adapter-dirs DIR)", true, ""}},
            argv);
  if (args.help()) {
    std::fputs(args.usage().c_str(), stdout);
    return 0;
  }
  namespace fs = std::filesystem;
  const fs::path in = args.get("in"), out = args.get("out");
  std::error_code ec;
  if (fs::equivalent(in, out, ec)) throw Error("--out " + out.string() + " is the --in file");
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(parent) || fs::is_directory(out))
    throw Error("--out " + out.string() + ": expected a file in an existing directory");
  const io::TorchCheckpoint ckpt = io::convert_torch_checkpoint(in, out);
  std::size_t elements = 0;
  for (const auto& name : ckpt.names()) elements += ckpt.tensor(name).data.size() / dtype_size(ckpt.tensor(name).dtype);
  for (const auto& name : ckpt.skipped()) std::fprintf(stderr, "note: %s: '%s' is not a tensor; left out\n", in.c_str(), name.c_str());
  std::fprintf(stderr, "converted %s (%s format): %zu tensors, %zu elements -> %s\n", in.c_str(), ckpt.format().c_str(),
               ckpt.names().size(), elements, out.c_str());
  return 0;
}

}  // namespace kadapter::cli
