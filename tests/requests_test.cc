// The service's checks on their own, without a server: a GenerateRequest
// turned into the runtime's request (the text limit derived from
// --max_prompt_tokens, the order of the checks, cancellation), Tokenize
// under the same limit, and the bearer token (its file, the comparison,
// every authorization value).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "service/auth.h"
#include "service/requests.h"
#include "tests/tiny_tokenizers.h"

namespace ferry::service {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

RequestContext Context(const text::Tokenizer& tok, int max_prompt_tokens = 0) {
  RequestContext ctx;
  ctx.tokenizer = &tok;
  ctx.n_ctx = 256;
  ctx.chat = text::ChatTemplate{};  // chatml
  ctx.limits.max_prompt_tokens = max_prompt_tokens;
  ctx.max_token_bytes = MaxTokenBytes(tok);
  return ctx;
}

v1::GenerateRequest Text(const std::string& text) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.set_max_tokens(4);
  return r;
}

// Random valid UTF-8 built from the vocabulary's pieces (as text), spaces,
// specials and other characters: the texts most likely to pack many bytes
// into few tokens, and some that do not.
std::string RandomText(const text::Tokenizer& tok, std::mt19937& rng, size_t pieces) {
  static const std::vector<std::string> others = {" ", "  ", "\n", "x", "\xc3\xa9", "\xe2\x98\x95", "\xf0\x9f\x98\x80",
                                                  "<|user|>", "<|im_start|>", "<|im_end|>", "hello", " the"};
  std::string out;
  for (size_t i = 0; i < pieces; ++i) {
    if (rng() % 2 == 0) {
      out += others[rng() % others.size()];
    } else {
      out += text::SanitizeUtf8(tok.TokenBytes(static_cast<int32_t>(rng() % tok.n_vocab())));
    }
  }
  return out;
}

// The limit never refuses a text that fits: no token stands for more input
// bytes than MaxTokenBytes, on either kind of tokenizer.
TEST(PromptTextLimit, NoTokenStandsForMoreBytesThanTheLongestPiece) {
  for (const bool bpe : {false, true}) {
    absl::StatusOr<testing::TinyTokenizer> t = bpe ? testing::TinyBpe() : testing::TinySpm();
    ASSERT_TRUE(t.ok()) << t.status();
    const text::Tokenizer& tok = *t->tokenizer;
    const size_t most = MaxTokenBytes(tok);
    EXPECT_EQ(most, bpe ? 12u : 43u) << "the longest piece: <|im_start|> / U+2581 and 40 x";
    std::mt19937 rng(bpe ? 2 : 1);
    for (int i = 0; i < 2000; ++i) {
      const std::string s = RandomText(tok, rng, 1 + rng() % 40);
      const size_t tokens = tok.Encode(s, false).size();
      ASSERT_LE(s.size(), tokens * most) << (bpe ? "bpe" : "spm") << " text '" << s << "' encodes to " << tokens
                                         << " tokens";
    }
    // The densest text there is: the longest piece repeated.
    const std::string dense = bpe ? std::string("<|im_start|>") : std::string(" ") + std::string(40, 'x');
    std::string text;
    for (int i = 0; i < 50; ++i) text += dense;
    EXPECT_LE(text.size(), tok.Encode(text, false).size() * most);
  }
}

TEST(PromptTextLimit, TextThatCannotFitIsRefusedBeforeTokenizing) {
  absl::StatusOr<testing::TinyTokenizer> t = testing::TinySpm();
  ASSERT_TRUE(t.ok());
  const RequestContext ctx = Context(*t->tokenizer, 64);
  EXPECT_EQ(PromptTextByteLimit(ctx), 64u * 43u);
  // At the limit in bytes: tokenized (and then refused for its tokens, or accepted).
  absl::StatusOr<PreparedRequest> p = PrepareRequest(Text(std::string(64 * 43, 'a')), ctx, 1);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("the prompt has 2754 tokens; the limit is 64"));
  // One byte more: refused by its length, before tokenizing.
  p = PrepareRequest(Text(std::string(64 * 43 + 1, 'a')), ctx, 1);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()),
              HasSubstr("prompt text has 2753 bytes; at most 2752 bytes fit in 64 tokens (43 bytes in the longest token)"));
  // Chat: the content, and the rendered prompt.
  v1::GenerateRequest chat;
  chat.mutable_chat()->add_messages()->set_content(std::string(64 * 43 + 1, 'b'));
  chat.mutable_chat()->mutable_messages(0)->set_role("user");
  p = PrepareRequest(chat, ctx, 1);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("the chat messages' content has 2753 bytes"));
  chat.mutable_chat()->mutable_messages(0)->set_content(std::string(64 * 43 - 5, 'b'));
  p = PrepareRequest(chat, ctx, 1);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("the rendered chat prompt has"));
  // Tokenize takes the same limit.
  v1::TokenizeRequest tr;
  tr.set_text(std::string(64 * 43 + 1, 'a'));
  v1::TokenizeResponse resp;
  const absl::Status s = TokenizeText(tr, ctx, &resp);
  EXPECT_THAT(std::string(s.message()), HasSubstr("text has 2753 bytes; at most 2752 bytes"));
  EXPECT_EQ(resp.ids_size(), 0);
  tr.set_text("hello hello");
  ASSERT_TRUE(TokenizeText(tr, ctx, &resp).ok());
  EXPECT_GT(resp.ids_size(), 1);
}

// Counts are checked before the items are copied or looked at.
TEST(PrepareRequest, CountsAreCheckedBeforeTheItems) {
  absl::StatusOr<testing::TinyTokenizer> t = testing::TinySpm();
  ASSERT_TRUE(t.ok());
  const RequestContext ctx = Context(*t->tokenizer, 64);
  v1::GenerateRequest r = Text("hello");
  for (int i = 0; i < 100000; ++i) r.add_stop_token_ids(-1);
  absl::StatusOr<PreparedRequest> p = PrepareRequest(r, ctx, 1);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("100000 stop token ids; the limit is 64"));
  v1::GenerateRequest ids;
  ids.set_max_tokens(4);
  for (int i = 0; i < 100000; ++i) ids.mutable_tokens()->add_ids(-1);
  p = PrepareRequest(ids, ctx, 1);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("the prompt has 100000 tokens; the limit is 64"));
}

TEST(PrepareRequest, LogitBiasPastTheBoundIsRefused) {
  absl::StatusOr<testing::TinyTokenizer> t = testing::TinySpm();
  ASSERT_TRUE(t.ok());
  v1::GenerateRequest r = Text("hello");
  (*r.mutable_sampling()->mutable_logit_bias())[5] = std::numeric_limits<float>::infinity();
  absl::StatusOr<PreparedRequest> p = PrepareRequest(r, Context(*t->tokenizer), 1);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("logit_bias for token 5 = inf is outside [-100, 100]"));
}

// A call the client cancelled while its prompt was tokenized is not queued.
TEST(PrepareRequest, ACancelledCallEndsAfterTokenizing) {
  absl::StatusOr<testing::TinyTokenizer> t = testing::TinyBpe();
  ASSERT_TRUE(t.ok());
  const RequestContext ctx = Context(*t->tokenizer);
  int asked = 0;
  const auto cancelled = [&] { return ++asked > 0; };
  absl::StatusOr<PreparedRequest> p = PrepareRequest(Text("hello there"), ctx, 1, cancelled);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(asked, 1);
  v1::GenerateRequest chat;
  chat.set_max_tokens(4);
  chat.mutable_chat()->add_messages()->set_content("hi");
  chat.mutable_chat()->mutable_messages(0)->set_role("user");
  EXPECT_EQ(PrepareRequest(chat, ctx, 1, cancelled).status().code(), absl::StatusCode::kCancelled);
  v1::TokenizeRequest tr;
  tr.set_text("hello");
  v1::TokenizeResponse resp;
  EXPECT_EQ(TokenizeText(tr, ctx, &resp, cancelled).code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(PrepareRequest(Text("hello there"), ctx, 1, [] { return false; }).ok());
}

// --- The bearer token ---

TEST(Auth, EqualityIgnoresNothing) {
  EXPECT_TRUE(ConstantTimeEquals("Bearer abc", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer abd", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer ab", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals(absl::string_view("Bearer abc\0", 11), "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer abcd", "Bearer abc"));
}

// Issue 17, item 6: a wrong length returned at once, which told an attacker
// the token's length. Times of values of about the token's length (one run,
// the faster of 5 rounds each): one byte longer, the last byte wrong, the
// first byte wrong. Each over the last-byte time is about 1.
TEST(Auth, ComparisonTimeDoesNotTellTheLengthOrThePlace) {
  const std::string want(1 << 16, 'k');
  std::string last = want, first = want;
  last.back() = 'j';
  first.front() = 'j';
  const std::string longer = want + "k";
  auto time = [&](const std::string& given) {
    const auto t0 = std::chrono::steady_clock::now();
    int equal = 0;
    for (int i = 0; i < 200; ++i) equal += ConstantTimeEquals(given, want);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(equal, 0);
    return s;
  };
  double t_longer = 1e9, t_last = 1e9, t_first = 1e9;
  for (int round = 0; round < 5; ++round) {
    t_longer = std::min(t_longer, time(longer));
    t_last = std::min(t_last, time(last));
    t_first = std::min(t_first, time(first));
  }
  EXPECT_GT(t_longer / t_last, 0.5) << "one byte longer " << t_longer << " s, last byte wrong " << t_last << " s";
  EXPECT_GT(t_first / t_last, 0.5) << "first byte wrong " << t_first << " s, last byte wrong " << t_last << " s";
}

// Issue 17, item 6: only the first authorization value was checked, so
// [right, wrong] passed and [wrong, right] failed.
TEST(Auth, EveryAuthorizationValueMustMatch) {
  const absl::string_view right = "Bearer s3cret", wrong = "Bearer guess";
  using V = std::vector<absl::string_view>;
  EXPECT_TRUE(CheckBearer(V{right}, "s3cret").ok());
  EXPECT_TRUE(CheckBearer(V{right, right}, "s3cret").ok());
  EXPECT_EQ(CheckBearer(V{right, wrong}, "s3cret").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(CheckBearer(V{wrong, right}, "s3cret").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(CheckBearer(V{wrong}, "s3cret").code(), absl::StatusCode::kUnauthenticated);
  const absl::Status none = CheckBearer(V{}, "s3cret");
  EXPECT_EQ(none.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(none.message()), HasSubstr("missing 'authorization: Bearer <token>'"));
}

std::string TokenFile(const std::string& name, const std::string& content, mode_t mode) {
  const fs::path dir = fs::temp_directory_path() / ("ferry_requests_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / name).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  chmod(path.c_str(), mode);
  return path;
}

// Issue 17, item 6: the file was cut at 4096 bytes silently and its
// permissions were not looked at.
TEST(Auth, TokenFileKindSizeAndPermissions) {
  absl::StatusOr<std::string> t = ReadTokenFile(TokenFile("ok", "s3cret-token\n", 0600));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "s3cret-token");
  EXPECT_TRUE(ReadTokenFile(TokenFile("group", "s3cret", 0640)).ok());
  EXPECT_TRUE(ReadTokenFile(TokenFile("exact", std::string(kMaxTokenFileBytes, 't'), 0400)).ok());

  const absl::Status big = ReadTokenFile(TokenFile("big", std::string(5000, 't'), 0600)).status();
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.message()), HasSubstr("is 5000 bytes; a token file holds one token of at most 4096"));
  const absl::Status world = ReadTokenFile(TokenFile("world", "s3cret", 0644)).status();
  EXPECT_EQ(world.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(world.message()), HasSubstr("readable by every user (mode 0644)"));
  const absl::Status gw = ReadTokenFile(TokenFile("groupw", "s3cret", 0620)).status();
  EXPECT_THAT(std::string(gw.message()), HasSubstr("writable by its group (mode 0620)"));
  const absl::Status ow = ReadTokenFile(TokenFile("otherw", "s3cret", 0602)).status();
  EXPECT_THAT(std::string(ow.message()), HasSubstr("writable by every user"));
  EXPECT_THAT(std::string(ReadTokenFile(TokenFile("empty", "\n", 0600)).status().message()), HasSubstr("is empty"));
  EXPECT_THAT(std::string(ReadTokenFile(TokenFile("ctl", "ab\ncd", 0600)).status().message()),
              HasSubstr("byte 2 (10) is not printable ASCII"));
  const fs::path dir = fs::path(TokenFile("ok", "x", 0600)).parent_path();
  const std::string fifo = (dir / "fifo").string();
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(std::string(ReadTokenFile(fifo).status().message()), HasSubstr("not a regular file"));
  EXPECT_EQ(ReadTokenFile((dir / "missing").string()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ferry::service
