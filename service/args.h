// The command line's settings that the engine does not own, grouped by
// concern like engine::PlacementArgs and engine::RuntimeArgs: a plain struct
// whose member initializers are the defaults (taken from the options struct
// the setting ends up in, so each default is written once), and a ForEach
// that calls v(&Group::member, "flag_name", "help") for each setting.
// service/flags.h makes the flags and `ferry --help` from these tables.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/model/synth.h"
#include "engine/quant/types.h"
#include "engine/text/sampler.h"
#include "service/bench.h"
#include "service/generate.h"
#include "service/limits.h"
#include "service/loadgen.h"
#include "service/plan_cli.h"
#include "service/server.h"

namespace ferry::service {

// Whether Group's table has a setting `name`, and its help ("" if not).
template <class Group>
constexpr bool InTable(absl::string_view name) {
  bool found = false;
  Group::ForEach([&](auto, absl::string_view n, const char*) { found = found || n == name; });
  return found;
}
template <class Group>
constexpr const char* HelpOf(absl::string_view name) {
  const char* help = "";
  Group::ForEach([&](auto, absl::string_view n, const char* h) {
    if (n == name) help = h;
  });
  return help;
}

// The flag names of Group's table, in its order.
template <class Group>
std::vector<absl::string_view> Names() {
  std::vector<absl::string_view> names;
  Group::ForEach([&](auto, absl::string_view n, absl::string_view) { names.push_back(n); });
  return names;
}

// Which model.
struct ModelArgs {
  std::string model;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&ModelArgs::model, "model",
      "path of a GGUF model; empty = the demo model (made on first use in the cache directory)");
  }
};

// What `inspect`, `bench` and `plan` print.
struct OutputArgs {
  bool json = false;
  bool tensors = false;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&OutputArgs::json, "json", "inspect: print the whole header as JSON; bench, plan: results as JSON");
    v(&OutputArgs::tensors, "tensors", "inspect: list every tensor");
  }
};

// The model `make-model` writes; the defaults are model::SynthOptions's (the
// demo model's shape).
struct MakeModelArgs {
  std::string out;
  std::string arch = model::SynthOptions().arch;
  int sliding_window = model::SynthOptions().sliding_window;
  float rope_scale = model::SynthOptions().rope_scale_factor;
  int layers = model::SynthOptions().n_layer;
  int embd = model::SynthOptions().n_embd;
  int heads = model::SynthOptions().n_head;
  int kv_heads = model::SynthOptions().n_head_kv;
  int ff = model::SynthOptions().n_ff;
  int vocab = model::SynthOptions().n_vocab;
  int context = model::SynthOptions().n_ctx;
  std::string type;  // empty: SynthOptions's type, or with a preset its mix
  uint64_t weights_seed = model::SynthOptions().seed;
  bool tied_output = model::SynthOptions().tied_output;
  int head_dim = model::SynthOptions().head_dim;
  std::string mix;
  std::string preset;
  bool header_only = false;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&MakeModelArgs::out, "out", "output path of the GGUF file (required)");
    v(&MakeModelArgs::arch, "arch", "architecture: llama, qwen2, qwen3, gemma2 or gemma3");
    v(&MakeModelArgs::sliding_window, "sliding_window",
      "gemma2 / gemma3 sliding-window size (gemma3: 0 = no sliding layers)");
    v(&MakeModelArgs::rope_scale, "rope_scale", "linear rope scaling factor (gemma3: of its global layers); 1 = none");
    v(&MakeModelArgs::layers, "layers", "transformer layers");
    v(&MakeModelArgs::embd, "embd", "embedding width");
    v(&MakeModelArgs::heads, "heads", "attention heads");
    v(&MakeModelArgs::kv_heads, "kv_heads", "key/value heads (grouped-query attention when < heads)");
    v(&MakeModelArgs::ff, "ff", "feed-forward width");
    v(&MakeModelArgs::vocab, "vocab", "vocabulary size (>= 260)");
    v(&MakeModelArgs::context, "context", "context length written to the metadata");
    v(&MakeModelArgs::type, "type",
      "type of the 2-D weights: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K (default q8_0; with "
      "--preset, the preset's q4_k_m mix)");
    v(&MakeModelArgs::weights_seed, "weights_seed", "random seed; the same seed and shape give the same bytes");
    v(&MakeModelArgs::tied_output, "tied_output", "omit output.weight (the head reuses token_embd)");
    v(&MakeModelArgs::head_dim, "head_dim", "per-head size; 0 = embd / heads");
    v(&MakeModelArgs::mix, "mix", "q4_k_m or q5_k_m: llama.cpp-style type mix instead of one --type");
    v(&MakeModelArgs::preset, "preset",
      "the shape of a popular model (llama3.1-8b, llama3.1-70b, qwen2.5-7b, qwen3-8b, gemma2-9b, gemma2-27b, "
      "gemma3-27b), q4_k_m mix unless --mix/--type say otherwise; shape flags are ignored");
    v(&MakeModelArgs::header_only, "header_only", "write only the header (real shapes and types, no weights)");
  }
};

// What `generate` asks for (and the few `loadgen` shares); the defaults are
// GenerateOptions's and text::SamplingParams's.
struct SamplingArgs {
  std::string prompt;
  std::string chat;
  std::string system;
  bool think = GenerateOptions().enable_thinking;
  int n = GenerateOptions().max_tokens;
  float temperature = text::SamplingParams().temperature;
  int top_k = text::SamplingParams().top_k;
  float top_p = text::SamplingParams().top_p;
  float min_p = text::SamplingParams().min_p;
  float typical_p = text::SamplingParams().typical_p;
  float repeat_penalty = text::SamplingParams().repetition_penalty;
  float presence_penalty = text::SamplingParams().presence_penalty;
  float frequency_penalty = text::SamplingParams().frequency_penalty;
  int repeat_last_n = text::SamplingParams().penalty_last_n;
  int64_t seed = -1;
  std::vector<std::string> stop;
  bool ignore_eos = GenerateOptions().ignore_eos;
  std::vector<std::string> stop_token_ids;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&SamplingArgs::prompt, "prompt",
      "generate: the prompt text (empty: start from BOS alone); loadgen: each request's prompt (default \"Once "
      "upon a time\")");
    v(&SamplingArgs::chat, "chat",
      "a user message, rendered with the model's chat template (tokenizer.chat_template) and answered (only the "
      "answer is printed); instead of --prompt");
    v(&SamplingArgs::system, "system",
      "with --chat: a system message (without it, the template's default system prompt if it has one)");
    v(&SamplingArgs::think, "think", "with --chat: qwen3 templates: false turns thinking off (enable_thinking)");
    v(&SamplingArgs::n, "n",
      "generate: tokens to generate at most (-n N); loadgen: tokens per request (the end-of-generation token is "
      "ignored)");
    v(&SamplingArgs::temperature, "temperature", "sampling temperature; 0 = greedy");
    v(&SamplingArgs::top_k, "top_k", "keep the k most likely tokens; 0 = off");
    v(&SamplingArgs::top_p, "top_p", "nucleus sampling mass in (0, 1]; 1 = off");
    v(&SamplingArgs::min_p, "min_p", "drop tokens below min_p x the best one's probability; 0 = off");
    v(&SamplingArgs::typical_p, "typical_p", "locally typical sampling mass in (0, 1]; 1 = off");
    v(&SamplingArgs::repeat_penalty, "repeat_penalty", "divide logits of recent tokens by this; 1 = off");
    v(&SamplingArgs::presence_penalty, "presence_penalty", "subtract from logits of recent tokens");
    v(&SamplingArgs::frequency_penalty, "frequency_penalty", "subtract this x count from logits of recent tokens");
    v(&SamplingArgs::repeat_last_n, "repeat_last_n", "how many recent tokens the penalties consider");
    v(&SamplingArgs::seed, "seed",
      "generate: sampling seed (same seed, same text); -1 = a random seed, printed; loadgen: seed of the "
      "--cancel_fraction/--sessions/--malformed_fraction draws (-1: loadgen's default, 1)");
    v(&SamplingArgs::stop, "stop", "stop sequences, comma-separated");
    v(&SamplingArgs::ignore_eos, "ignore_eos", "keep going past the end-of-generation token");
    v(&SamplingArgs::stop_token_ids, "stop_token_ids", "token ids that end generation, comma-separated");
  }
};

// `bench`'s runs; the defaults are BenchOptions's.
struct BenchArgs {
  std::vector<std::string> batches = [] {
    std::vector<std::string> b;
    for (int n : BenchOptions().batches) b.push_back(absl::StrCat(n));
    return b;
  }();
  int prompt_tokens = BenchOptions().prompt_tokens;
  int gen_tokens = BenchOptions().gen_tokens;
  int repetitions = BenchOptions().repetitions;
  bool sweep = BenchOptions().sweep;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&BenchArgs::batches, "batches", "sequences decoded together, comma-separated");
    v(&BenchArgs::prompt_tokens, "prompt_tokens", "prompt tokens per sequence");
    v(&BenchArgs::gen_tokens, "gen_tokens", "decode steps");
    v(&BenchArgs::repetitions, "repetitions", "runs per batch size; the best is reported");
    v(&BenchArgs::sweep, "sweep",
      "run at 0, 25, 50, 75 and 100 % of the layers resident (one --device budget) and print tokens/s, streamed "
      "GB/s, % of copy bandwidth and overlap per row");
  }
};

// The GPU a plan is for, and how much of its memory to use.
struct GpuArgs {
  std::string gpu = PlanOptions().gpu;
  std::vector<std::string> gpu_memory;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&GpuArgs::gpu, "gpu", "plan: GPU profile (memory and CUDA context overhead)");
    v(&GpuArgs::gpu_memory, "gpu_memory",
      "plan: memory budgets to plan for, comma-separated (8GiB, 512MiB, ...; default 6,8,12,16,24,48,80 GiB); "
      "'device' = the profile's memory. Others: one budget on the device (default: all of its memory)");
  }
};

// `serve`'s listeners, limits and credentials; the defaults are ServeOptions's
// and ServeLimits's.
struct ServerArgs {
  std::string host = ServeOptions().host;
  int port = ServeOptions().port;
  int metrics_port = ServeOptions().metrics_port;
  int http_port = ServeOptions().http_port;
  std::string metrics_host = ServeOptions().metrics_host;
  int max_prompt_tokens = ServeLimits().max_prompt_tokens;
  int max_output_tokens = ServeLimits().max_output_tokens;
  int max_message_bytes = ServeLimits().max_message_bytes;
  int max_streams_per_connection = ServeLimits().max_streams_per_connection;
  int min_ping_interval_ms = ServeLimits().min_ping_interval_ms;
  int max_buffered_tokens = ServeLimits().max_buffered_tokens;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string auth_token_file;
  double drain_seconds = 30;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&ServerArgs::host, "host",
      "address the gRPC port listens on; the default is loopback only. 0.0.0.0 or :: = every interface: pair it "
      "with --tls_cert/--tls_key and --auth_token_file (plaintext and no token by default)");
    v(&ServerArgs::port, "port", "gRPC port; 0 = any free port (printed)");
    v(&ServerArgs::metrics_port, "metrics_port",
      "HTTP port for Prometheus /metrics and /healthz, /readyz; 0 = any free port (printed), -1 = none");
    v(&ServerArgs::http_port, "http_port",
      "port of the OpenAI-compatible HTTP API on --host (/v1/models, /v1/completions, /v1/chat/completions, "
      "/health; TLS and bearer token as gRPC's); 0 = any free port (printed), -1 = off");
    v(&ServerArgs::metrics_host, "metrics_host",
      "address the metrics port listens on (plain HTTP, no token: /metrics, /healthz, /readyz); loopback by "
      "default, 0.0.0.0 only where a scraper outside the host or container must reach it");
    v(&ServerArgs::max_prompt_tokens, "max_prompt_tokens", "longest prompt accepted; 0 = the context");
    v(&ServerArgs::max_output_tokens, "max_output_tokens", "largest max_tokens accepted; 0 = the context");
    v(&ServerArgs::max_message_bytes, "max_message_bytes", "largest request message");
    v(&ServerArgs::max_streams_per_connection, "max_streams_per_connection",
      "concurrent calls on one HTTP/2 connection");
    v(&ServerArgs::min_ping_interval_ms, "min_ping_interval_ms",
      "keepalive enforcement: clients pinging more often than this without data are disconnected");
    v(&ServerArgs::max_buffered_tokens, "max_buffered_tokens",
      "generated tokens queued for a client that is not reading before its stream is cut off");
    v(&ServerArgs::tls_cert, "tls_cert",
      "serve: PEM certificate chain: serve TLS (with --tls_key; default: plaintext gRPC); loadgen: client "
      "certificate for mutual TLS");
    v(&ServerArgs::tls_key, "tls_key", "PEM private key for --tls_cert");
    v(&ServerArgs::tls_client_ca, "tls_client_ca", "PEM CA bundle: require client certificates it signed (mutual TLS)");
    v(&ServerArgs::auth_token_file, "auth_token_file",
      "file holding a bearer token (default: none, every call is let in); every ferry.v1.Inference call must send "
      "'authorization: Bearer <token>' (health and reflection stay open for probes). At most 4096 bytes of "
      "printable ASCII; serve refuses a file others can read or write (chmod 600, or 640 for a group)");
    v(&ServerArgs::drain_seconds, "drain_seconds", "on SIGTERM, how long in-flight requests may take to finish");
  }
};

// `loadgen`'s load; the defaults are LoadgenOptions's.
struct LoadgenArgs {
  std::string target = LoadgenOptions().target;
  int concurrency = LoadgenOptions().concurrency;
  int connections = LoadgenOptions().connections;
  int requests = LoadgenOptions().requests;
  double duration = LoadgenOptions().duration_s;
  std::string tls_ca;
  double cancel_fraction = LoadgenOptions().cancel_fraction;
  int sessions = LoadgenOptions().sessions;
  double malformed_fraction = LoadgenOptions().malformed_fraction;
  bool direct = LoadgenOptions().direct;
  bool http = LoadgenOptions().http;

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&LoadgenArgs::target, "target", "the server to load (only this address is contacted)");
    v(&LoadgenArgs::concurrency, "concurrency", "requests in flight at once");
    v(&LoadgenArgs::connections, "connections",
      "HTTP/2 connections the requests share (one per client: --connections = --concurrency)");
    v(&LoadgenArgs::requests, "requests", "requests in all (or --duration)");
    v(&LoadgenArgs::duration, "duration", "seconds to keep the load up (or --requests)");
    v(&LoadgenArgs::tls_ca, "tls_ca", "PEM CA bundle: connect with TLS and trust it");
    v(&LoadgenArgs::cancel_fraction, "cancel_fraction",
      "share of requests cancelled after a random number of tokens (0 = before the first)");
    v(&LoadgenArgs::sessions, "sessions",
      "requests carry a session id out of this many (0 = none), each with its own prompt");
    v(&LoadgenArgs::malformed_fraction, "malformed_fraction",
      "share of requests sent malformed (each kind must come back INVALID_ARGUMENT)");
    v(&LoadgenArgs::direct, "direct",
      "drive an in-process runtime on --model (--device, --slots, --batch) instead of --target: the baseline for "
      "the gRPC overhead");
    v(&LoadgenArgs::http, "http",
      "send the requests to --target's OpenAI-compatible HTTP API (ferry serve --http_port; POST /v1/completions, "
      "streamed) instead of gRPC; one HTTP/1.1 connection per worker");
  }
};

}  // namespace ferry::service
