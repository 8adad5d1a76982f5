// ferry: the command-line entry point. Subcommands share one flag set
// (Abseil flags); each flag's help says which subcommands read it.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/gguf/gguf.h"
#include "engine/model/synth.h"
#include "service/inspect.h"

ABSL_FLAG(std::string, model, "",
          "inspect: path of a GGUF model; empty = the demo model (made on first use in the cache directory)");
ABSL_FLAG(std::string, out, "", "make-model: output path of the GGUF file (required)");
ABSL_FLAG(std::string, arch, "llama", "make-model: architecture: llama, qwen2 or gemma2");
ABSL_FLAG(int, sliding_window, 4096, "make-model: gemma2 sliding-window size");
ABSL_FLAG(int, layers, 4, "make-model: transformer layers");
ABSL_FLAG(int, embd, 256, "make-model: embedding width");
ABSL_FLAG(int, heads, 8, "make-model: attention heads");
ABSL_FLAG(int, kv_heads, 4, "make-model: key/value heads (grouped-query attention when < heads)");
ABSL_FLAG(int, ff, 704, "make-model: feed-forward width");
ABSL_FLAG(int, vocab, 1024, "make-model: vocabulary size (>= 260)");
ABSL_FLAG(int, context, 2048, "make-model: context length written to the metadata");
ABSL_FLAG(std::string, type, "q8_0", "make-model: type of the 2-D weights: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K");
ABSL_FLAG(uint64_t, seed, 1, "make-model: random seed; the same seed and shape give the same bytes");
ABSL_FLAG(bool, tied_output, false, "make-model: omit output.weight (the head reuses token_embd)");
ABSL_FLAG(bool, json, false, "inspect: print the whole header as JSON");
ABSL_FLAG(bool, tensors, false, "inspect: list every tensor");

namespace ferry {
namespace {

constexpr char kUsage[] = R"(ferry: serve GGUF language models from a GPU too small to hold them.

usage: ferry <command> [flags]

commands:
  make-model   write a model with deterministic random weights in a real
               architecture's layout (--out PATH, shape and --type flags)
  inspect      describe a GGUF file from its header: architecture, shape,
               bytes by type and by layer, metadata (--model PATH, --json,
               --tensors); without --model, the demo model

examples:
  ferry make-model --out tiny.gguf --layers 2 --embd 128 --type f16
  ferry inspect --model ~/models/llama-3-8b.Q4_K_M.gguf --tensors

Flags for all commands follow; each says which command reads it.)";

std::string FormatBytes(uint64_t b) { return absl::StrFormat("%.1f MiB", static_cast<double>(b) / (1 << 20)); }

// Writes a model, printing progress on stderr when it takes a while.
absl::Status MakeModel(const std::string& path, const model::SynthOptions& options) {
  const absl::Time start = absl::Now();
  absl::Time last_report = start;
  const bool tty = ::isatty(2);
  auto progress = [&](size_t done, size_t total, uint64_t bytes, uint64_t total_bytes) {
    const absl::Time now = absl::Now();
    if (done == total || now - last_report > absl::Milliseconds(500)) {
      std::fprintf(stderr, "%swriting %s: tensor %zu/%zu, %s of %s", tty ? "\r" : "", path.c_str(), done, total,
                   FormatBytes(bytes).c_str(), FormatBytes(total_bytes).c_str());
      if (!tty || done == total) std::fprintf(stderr, "\n");
      last_report = now;
    }
  };
  if (absl::Status s = model::WriteSyntheticModel(path, options, progress); !s.ok()) return s;
  std::fprintf(stderr, "wrote %s (%s parameters of random weights) in %.1f s\n", path.c_str(),
               absl::StrCat(model::ParameterCount(options)).c_str(), absl::ToDoubleSeconds(absl::Now() - start));
  return absl::OkStatus();
}

absl::Status RunMakeModel() {
  model::SynthOptions o;
  o.arch = absl::GetFlag(FLAGS_arch);
  o.n_layer = absl::GetFlag(FLAGS_layers);
  o.n_embd = absl::GetFlag(FLAGS_embd);
  o.n_head = absl::GetFlag(FLAGS_heads);
  o.n_head_kv = absl::GetFlag(FLAGS_kv_heads);
  o.n_ff = absl::GetFlag(FLAGS_ff);
  o.n_vocab = absl::GetFlag(FLAGS_vocab);
  o.n_ctx = absl::GetFlag(FLAGS_context);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.tied_output = absl::GetFlag(FLAGS_tied_output);
  o.sliding_window = absl::GetFlag(FLAGS_sliding_window);
  const std::string type = absl::GetFlag(FLAGS_type);
  const auto info = quant::FindTypeByName(type);
  if (!info) return absl::InvalidArgumentError(absl::StrCat("--type: unknown tensor type '", type, "'"));
  o.type = info->type;
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("make-model: --out PATH is required");
  return MakeModel(out, o);
}

// The demo model lives in $FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else
// ~/.cache/ferry, and is written the first time it is needed.
absl::StatusOr<std::string> DemoModelPath() {
  std::filesystem::path dir;
  if (const char* d = std::getenv("FERRY_CACHE_DIR"); d && *d) dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = std::filesystem::path(x) / "ferry";
  else if (const char* h = std::getenv("HOME"); h && *h) dir = std::filesystem::path(h) / ".cache" / "ferry";
  else dir = std::filesystem::temp_directory_path() / "ferry";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir.string(), ": cannot create: ", ec.message()));
  const model::SynthOptions demo;  // the defaults are the demo's shape
  const std::string path = (dir / absl::StrCat("demo-", demo.arch, "-", quant::Info(demo.type).name, "-v1.gguf")).string();
  if (!std::filesystem::exists(path)) {
    std::fprintf(stderr, "no --model given: writing the demo model (random weights; its text is noise)\n");
    if (absl::Status s = MakeModel(path, demo); !s.ok()) return s;
  } else {
    std::fprintf(stderr, "no --model given: using the demo model %s (random weights; its text is noise)\n",
                 path.c_str());
  }
  return path;
}

absl::Status RunInspect() {
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) {
    absl::StatusOr<std::string> demo = DemoModelPath();
    if (!demo.ok()) return demo.status();
    path = *demo;
  }
  absl::StatusOr<std::unique_ptr<gguf::File>> file = gguf::File::Open(path);
  if (!file.ok()) return file.status();
  const std::string text =
      absl::GetFlag(FLAGS_json) ? service::InspectJson(**file) : service::InspectText(**file, absl::GetFlag(FLAGS_tensors));
  std::fwrite(text.data(), 1, text.size(), stdout);
  return absl::OkStatus();
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(ferry::kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n\nrun `ferry --help` for the flags.\n", ferry::kUsage);
    return 2;
  }
  if (args.size() > 2) {
    std::fprintf(stderr, "ferry: unexpected argument '%s' (flags are --name=value)\n", args[2]);
    return 2;
  }
  const std::string command = args[1];
  absl::Status status;
  if (command == "make-model") {
    status = ferry::RunMakeModel();
  } else if (command == "inspect") {
    status = ferry::RunInspect();
  } else {
    std::fprintf(stderr, "ferry: unknown command '%s' (commands: make-model, inspect; see --help)\n", command.c_str());
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "ferry %s: %s\n", command.c_str(), std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
