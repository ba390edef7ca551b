// Downstream use of the installed package: load a model directory and encode one sequence.
#include <cstdio>
#include <type_traits>
#include <vector>

#include <kadapter/kadapter.hpp>

// Both using-directives, as a user may write them: the tokenizer's options (io::EncodeOptions)
// and the encoder's (ForwardOptions) have names of their own (they once shared one).
using namespace kadapter;
using namespace kadapter::io;
static_assert(std::is_same_v<EncodeOptions, kadapter::io::EncodeOptions>);
static_assert(std::is_same_v<ForwardOptions, kadapter::ForwardOptions>);

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: downstream MODEL_DIR\n");
    return 2;
  }
  try {
    const std::vector<std::int64_t> ids{0, 7, 8, 9, 2}, mask(5, 1);
    const TokenBatch batch{1, 5, ids, mask, {}};
    return with_encoder_dir<float>(argv[1], [&](auto& enc, const auto&) {
      HiddenStates<float> states(enc.config().layers, {enc.config().layers});
      enc.forward(states, batch, ForwardOptions{});
      std::printf("kadapter %s: last hidden state (1, 5, %ld), first value %.6f\n",
                  version_string, static_cast<long>(states.hidden()),
                  states[enc.config().layers](0, 0, 0));
      return 0;
    });
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
