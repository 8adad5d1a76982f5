#include "service/flags.h"

#include <cstdio>
#include <cstdlib>
#include <initializer_list>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/engine/engine.h"
#include "service/args.h"

// One flag per table entry: its type is the member's, its default the
// group's member initializer, its help the table's; a name that is not in the
// group's table does not compile. The flags test checks the other way round:
// that every entry has its flag.
#define FERRY_FLAG(Group, name)                                                                      \
  static_assert(::ferry::service::InTable<Group>(#name), "--" #name " is not in " #Group "'s table"); \
  ABSL_FLAG(decltype(Group::name), name, Group().name, ::ferry::service::HelpOf<Group>(#name))

FERRY_FLAG(ferry::service::ModelArgs, model);

FERRY_FLAG(ferry::engine::PlacementArgs, device);
FERRY_FLAG(ferry::engine::PlacementArgs, gpu_layers);
FERRY_FLAG(ferry::engine::PlacementArgs, ring_depth);
FERRY_FLAG(ferry::engine::PlacementArgs, placement);
FERRY_FLAG(ferry::engine::PlacementArgs, cpu_layers);
FERRY_FLAG(ferry::service::GpuArgs, gpu);
FERRY_FLAG(ferry::service::GpuArgs, gpu_memory);

FERRY_FLAG(ferry::engine::RuntimeArgs, threads);
FERRY_FLAG(ferry::engine::RuntimeArgs, ctx);
FERRY_FLAG(ferry::engine::RuntimeArgs, slots);
FERRY_FLAG(ferry::engine::RuntimeArgs, batch);
FERRY_FLAG(ferry::engine::RuntimeArgs, kv_type);
FERRY_FLAG(ferry::engine::RuntimeArgs, max_queue);

FERRY_FLAG(ferry::service::SamplingArgs, prompt);
FERRY_FLAG(ferry::service::SamplingArgs, chat);
FERRY_FLAG(ferry::service::SamplingArgs, system);
FERRY_FLAG(ferry::service::SamplingArgs, think);
FERRY_FLAG(ferry::service::SamplingArgs, n);
FERRY_FLAG(ferry::service::SamplingArgs, temperature);
FERRY_FLAG(ferry::service::SamplingArgs, top_k);
FERRY_FLAG(ferry::service::SamplingArgs, top_p);
FERRY_FLAG(ferry::service::SamplingArgs, min_p);
FERRY_FLAG(ferry::service::SamplingArgs, typical_p);
FERRY_FLAG(ferry::service::SamplingArgs, repeat_penalty);
FERRY_FLAG(ferry::service::SamplingArgs, presence_penalty);
FERRY_FLAG(ferry::service::SamplingArgs, frequency_penalty);
FERRY_FLAG(ferry::service::SamplingArgs, repeat_last_n);
FERRY_FLAG(ferry::service::SamplingArgs, seed);
FERRY_FLAG(ferry::service::SamplingArgs, stop);
FERRY_FLAG(ferry::service::SamplingArgs, ignore_eos);
FERRY_FLAG(ferry::service::SamplingArgs, stop_token_ids);

FERRY_FLAG(ferry::service::OutputArgs, json);
FERRY_FLAG(ferry::service::OutputArgs, tensors);

FERRY_FLAG(ferry::service::BenchArgs, batches);
FERRY_FLAG(ferry::service::BenchArgs, prompt_tokens);
FERRY_FLAG(ferry::service::BenchArgs, gen_tokens);
FERRY_FLAG(ferry::service::BenchArgs, repetitions);
FERRY_FLAG(ferry::service::BenchArgs, sweep);

FERRY_FLAG(ferry::service::ServerArgs, host);
FERRY_FLAG(ferry::service::ServerArgs, port);
FERRY_FLAG(ferry::service::ServerArgs, metrics_port);
FERRY_FLAG(ferry::service::ServerArgs, http_port);
FERRY_FLAG(ferry::service::ServerArgs, metrics_host);
FERRY_FLAG(ferry::service::ServerArgs, max_prompt_tokens);
FERRY_FLAG(ferry::service::ServerArgs, max_output_tokens);
FERRY_FLAG(ferry::service::ServerArgs, max_message_bytes);
FERRY_FLAG(ferry::service::ServerArgs, max_streams_per_connection);
FERRY_FLAG(ferry::service::ServerArgs, min_ping_interval_ms);
FERRY_FLAG(ferry::service::ServerArgs, max_buffered_tokens);
FERRY_FLAG(ferry::service::ServerArgs, tls_cert);
FERRY_FLAG(ferry::service::ServerArgs, tls_key);
FERRY_FLAG(ferry::service::ServerArgs, tls_client_ca);
FERRY_FLAG(ferry::service::ServerArgs, auth_token_file);
FERRY_FLAG(ferry::service::ServerArgs, drain_seconds);

FERRY_FLAG(ferry::service::LoadgenArgs, target);
FERRY_FLAG(ferry::service::LoadgenArgs, concurrency);
FERRY_FLAG(ferry::service::LoadgenArgs, connections);
FERRY_FLAG(ferry::service::LoadgenArgs, requests);
FERRY_FLAG(ferry::service::LoadgenArgs, duration);
FERRY_FLAG(ferry::service::LoadgenArgs, tls_ca);
FERRY_FLAG(ferry::service::LoadgenArgs, cancel_fraction);
FERRY_FLAG(ferry::service::LoadgenArgs, sessions);
FERRY_FLAG(ferry::service::LoadgenArgs, malformed_fraction);
FERRY_FLAG(ferry::service::LoadgenArgs, direct);
FERRY_FLAG(ferry::service::LoadgenArgs, http);

FERRY_FLAG(ferry::service::MakeModelArgs, out);
FERRY_FLAG(ferry::service::MakeModelArgs, arch);
FERRY_FLAG(ferry::service::MakeModelArgs, sliding_window);
FERRY_FLAG(ferry::service::MakeModelArgs, rope_scale);
FERRY_FLAG(ferry::service::MakeModelArgs, layers);
FERRY_FLAG(ferry::service::MakeModelArgs, embd);
FERRY_FLAG(ferry::service::MakeModelArgs, heads);
FERRY_FLAG(ferry::service::MakeModelArgs, kv_heads);
FERRY_FLAG(ferry::service::MakeModelArgs, ff);
FERRY_FLAG(ferry::service::MakeModelArgs, vocab);
FERRY_FLAG(ferry::service::MakeModelArgs, context);
FERRY_FLAG(ferry::service::MakeModelArgs, type);
FERRY_FLAG(ferry::service::MakeModelArgs, weights_seed);
FERRY_FLAG(ferry::service::MakeModelArgs, tied_output);
FERRY_FLAG(ferry::service::MakeModelArgs, head_dim);
FERRY_FLAG(ferry::service::MakeModelArgs, mix);
FERRY_FLAG(ferry::service::MakeModelArgs, preset);
FERRY_FLAG(ferry::service::MakeModelArgs, header_only);

namespace ferry::service {

namespace {

using NameList = std::vector<absl::string_view>;

NameList Join(std::initializer_list<NameList> parts) {
  NameList all;
  for (const NameList& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

// Words of `text` on lines of at most `width` columns, each indented by
// `indent` spaces.
std::string Wrap(absl::string_view text, size_t indent, size_t width) {
  std::string out;
  size_t column = 0;
  while (!text.empty()) {
    const size_t space = text.find(' ');
    const absl::string_view word = text.substr(0, space);
    text = space == absl::string_view::npos ? absl::string_view() : text.substr(space + 1);
    if (column > 0 && column + 1 + word.size() > width) {
      out += '\n';
      column = 0;
    }
    if (column == 0) {
      out.append(indent, ' ');
      column = indent;
    } else {
      out += ' ';
      ++column;
    }
    out.append(word.data(), word.size());
    column += word.size();
  }
  return out + "\n";
}

constexpr char kHeader[] = R"(ferry: serve GGUF language models from a GPU too small to hold them.

)";

constexpr char kExamples[] = R"(examples:
  ferry generate --model stories260K.gguf --prompt "Once upon a time" -n 64 --temperature 0
  ferry generate --device sim:mem=2GiB,h2d=12GB/s --gpu_layers 10 --prompt "Hello"
  ferry serve --model stories260K.gguf --port 50051 --slots 8
  ferry loadgen --target 127.0.0.1:50051 --concurrency 16 --requests 64 -n 64
  ferry bench --device sim:profile=rtx4060-8g --sweep --batches 1,8
  ferry make-model --out tiny.gguf --layers 2 --embd 128 --type f16
  ferry inspect --model ~/models/llama-3-8b.Q4_K_M.gguf --tensors
)";

std::string CommandLines(const CommandInfo& c) {
  std::string name = absl::StrCat("  ", c.name);
  name.resize(15, ' ');
  return absl::StrCat(name, c.summary, "\n");
}

}  // namespace

const absl::CommandLineFlag& FlagOf(absl::string_view name) {
  const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
  if (f == nullptr) {
    std::fprintf(stderr, "ferry: internal error: --%.*s is in a settings table but has no flag (service/flags.cc)\n",
                 static_cast<int>(name.size()), name.data());
    std::abort();
  }
  return *f;
}

void WrongFlagType(absl::string_view name) {
  std::fprintf(stderr, "ferry: internal error: --%.*s is not of its table entry's type (service/flags.cc)\n",
               static_cast<int>(name.size()), name.data());
  std::abort();
}

const std::vector<FlagGroup>& FlagGroups() {
  static const auto* groups = new std::vector<FlagGroup>{
      {"model", Names<ModelArgs>()},
      {"placement: where the weights go", Join({Names<engine::PlacementArgs>(), Names<GpuArgs>()})},
      {"runtime: how requests run", Names<engine::RuntimeArgs>()},
      {"generation: what a request asks for", Names<SamplingArgs>()},
      {"output", Names<OutputArgs>()},
      {"bench", Names<BenchArgs>()},
      {"server: listeners, limits, credentials", Names<ServerArgs>()},
      {"loadgen", Names<LoadgenArgs>()},
      {"make-model: the model written", Names<MakeModelArgs>()},
  };
  return *groups;
}

// What each command reads; the Run functions of service/ferry_main.cc get
// their settings through FromFlags with these names, so a flag a command
// does not list here keeps its default there.
const std::vector<FlagReader>& FlagReaders() {
  static const auto* readers = new std::vector<FlagReader>{
      {"bench", Join({Names<ModelArgs>(), Names<engine::PlacementArgs>(), {"gpu_memory", "threads", "batch", "json"},
                      Names<BenchArgs>()})},
      {"generate", Join({Names<ModelArgs>(), Names<engine::PlacementArgs>(), {"gpu_memory", "threads", "ctx", "batch",
                                                                               "kv_type"},
                         Names<SamplingArgs>()})},
      {"info", Names<ModelArgs>()},
      {"inspect", Join({Names<ModelArgs>(), Names<OutputArgs>()})},
      {"loadgen", Join({Names<LoadgenArgs>(), {"prompt", "n", "temperature", "seed", "tls_cert", "tls_key",
                                               "auth_token_file"}})},
      {"loadgen --direct", Join({Names<ModelArgs>(), Names<engine::PlacementArgs>(), {"gpu_memory"},
                                 Names<engine::RuntimeArgs>()})},
      {"make-model", Names<MakeModelArgs>()},
      {"plan", Join({Names<ModelArgs>(), Names<GpuArgs>(), {"gpu_layers", "ring_depth"},
                     {"threads", "ctx", "slots", "batch", "kv_type"}, {"json"}})},
      {"serve", Join({Names<ModelArgs>(), Names<engine::PlacementArgs>(), {"gpu_memory"},
                      Names<engine::RuntimeArgs>(), Names<ServerArgs>()})},
  };
  return *readers;
}

bool Reads(absl::string_view reader, absl::string_view flag) {
  for (const FlagReader& r : FlagReaders()) {
    if (r.name != reader) continue;
    for (absl::string_view f : r.flags) {
      if (f == flag) return true;
    }
  }
  return false;
}

const std::vector<CommandInfo>& Commands() {
  static const auto* commands = new std::vector<CommandInfo>{
      {"bench", R"(prefill and decode tokens/s at batch sizes --batches (default
               1,8) on --device; --sweep: the same at 0..100 % resident with
               streamed GB/s and copy/compute overlap per row)"},
      {"generate", R"(generate text, streamed as it is made, then a line of figures
               (--model, --prompt, -n, sampling flags); --device sim:...
               streams the layers that do not fit, after printing where
               each layer went)"},
      {"info", R"(a model's architecture, parameters, context, tokenizer, bytes
               by type and by layer (--model))"},
      {"loadgen", R"(load a server: --target HOST:PORT (default 127.0.0.1:50051),
               --concurrency C, --requests N or --duration T, -n tokens each;
               prints time to first token and inter-token latency p50/p90/
               p99, tokens/s and errors by code (--direct: the same load on
               an in-process runtime, no gRPC; --http: through the server's
               OpenAI-compatible HTTP API))"},
      {"make-model", R"(write a model with deterministic random weights in a real
               architecture's layout (--out PATH, shape and --type flags))"},
      {"serve", R"(the gRPC service (ferry.v1.Inference, health, reflection),
               and with --http_port an OpenAI-compatible HTTP API:
               --model (default: the demo model), --host, --port, --device
               and placement flags, --slots, limits, TLS and token flags;
               SIGTERM drains. Exposure by default: gRPC on 127.0.0.1:50051
               and metrics on 127.0.0.1:9400, loopback only, plaintext, no
               token; before --host 0.0.0.0 add --tls_cert/--tls_key and
               --auth_token_file)"},
      {"plan", R"(what fits on a GPU, from the header alone: layers resident and
               device memory by category for each --gpu_memory budget
               (default 6..80 GiB), or exactly --gpu_layers N)"},
      {"inspect", R"(describe a GGUF file from its header: architecture, shape,
               bytes by type and by layer, metadata (--model PATH, --json,
               --tensors); without --model, the demo model)"},
  };
  return *commands;
}

std::string Usage() {
  std::string s = absl::StrCat(kHeader, "usage: ferry <command> [flags]\n\ncommands:\n");
  for (const CommandInfo& c : Commands()) s += CommandLines(c);
  return absl::StrCat(s, "\n", kExamples);
}

std::string Help(absl::string_view command) {
  std::string s;
  if (command.empty()) {
    s = absl::StrCat(Usage(), "\n",
                     Wrap("flags (--name=value or --name value; dashes and underscores alike), by concern, each "
                          "with its default and the commands that read it:",
                          0, 78));
  } else {
    const CommandInfo* info = nullptr;
    for (const CommandInfo& c : Commands()) {
      if (c.name == command) info = &c;
    }
    if (info == nullptr) return "";
    s = absl::StrCat(kHeader, "usage: ferry ", command, " [flags]\n\n", CommandLines(*info), "\nflags ", command,
                     " reads, by concern, each with its default:\n");
  }
  for (const FlagGroup& g : FlagGroups()) {
    std::string lines;
    for (absl::string_view name : g.flags) {
      NameList readers;
      for (const FlagReader& r : FlagReaders()) {
        const bool of_command = command.empty() || r.name == command || r.name.substr(0, r.name.find(' ')) == command;
        if (of_command && Reads(r.name, name)) readers.push_back(r.name);
      }
      if (readers.empty()) continue;
      const absl::CommandLineFlag& f = FlagOf(name);
      std::string value = f.DefaultValue();
      if (value.empty()) value = "\"\"";
      // `ferry serve --help` need not say "serve" on every line, only a mode's name ("loadgen --direct").
      const bool say_readers = command.empty() || readers.size() > 1 || readers[0] != command;
      lines += absl::StrCat("  --", name, "=", value,
                            say_readers ? absl::StrCat("  (", absl::StrJoin(readers, ", "), ")") : "", "\n",
                            Wrap(f.Help(), 6, 78));
    }
    if (!lines.empty()) s += absl::StrCat("\n", g.title, ":\n", lines);
  }
  return s;
}

}  // namespace ferry::service
