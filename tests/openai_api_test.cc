// OpenAI request bodies read into ferry's GenerateRequest (service/
// openai_api.cc), field by field: what each accepted field sets, and the
// refusals with the field named. The end-to-end behaviour (text equal to
// gRPC's, streams, errors on the wire) is tests/python/openai_sdk_check.py.
#include "service/openai_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ferry::service {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<OpenAiRequest> Completions(const std::string& body, std::string* param = nullptr) {
  std::string p;
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, body, param != nullptr ? param : &p);
}
absl::StatusOr<OpenAiRequest> Chat(const std::string& body, std::string* param = nullptr) {
  std::string p;
  return ParseOpenAiRequest(OpenAiEndpoint::kChat, body, param != nullptr ? param : &p);
}

TEST(OpenAiRequest, CompletionFieldsBecomeTheGenerateRequest) {
  absl::StatusOr<OpenAiRequest> r = Completions(R"({
    "model": "anything", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.5, "top_p": 0.9,
    "top_k": 20, "min_p": 0.1, "typical_p": 0.8, "repetition_penalty": 1.1, "presence_penalty": 0.25,
    "frequency_penalty": -0.5, "seed": 18446744073709551615, "stop": "\n\n", "logit_bias": {"42": -100, "7": 2.5},
    "logprobs": 3, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
    "user": "someone", "n": 1, "best_of": 1, "an_unknown_field": {"nested": [1, 2]}})");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::GenerateRequest& g = r->request;
  EXPECT_EQ(g.text(), "Once upon a time");
  EXPECT_EQ(g.max_tokens(), 16);
  EXPECT_TRUE(r->max_tokens_set);
  EXPECT_FLOAT_EQ(g.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(g.sampling().top_p(), 0.9f);
  EXPECT_EQ(g.sampling().top_k(), 20);
  EXPECT_FLOAT_EQ(g.sampling().min_p(), 0.1f);
  EXPECT_FLOAT_EQ(g.sampling().typical_p(), 0.8f);
  EXPECT_FLOAT_EQ(g.sampling().repetition_penalty(), 1.1f);
  EXPECT_FLOAT_EQ(g.sampling().presence_penalty(), 0.25f);
  EXPECT_FLOAT_EQ(g.sampling().frequency_penalty(), -0.5f);
  EXPECT_EQ(g.seed(), 18446744073709551615ull);
  ASSERT_EQ(g.stop_size(), 1);
  EXPECT_EQ(g.stop(0), "\n\n");
  EXPECT_EQ(g.sampling().logit_bias().size(), 2u);
  EXPECT_FLOAT_EQ(g.sampling().logit_bias().at(42), -100.0f);
  EXPECT_FLOAT_EQ(g.sampling().logit_bias().at(7), 2.5f);
  EXPECT_TRUE(g.logprobs());
  EXPECT_EQ(g.top_logprobs(), 3);
  EXPECT_TRUE(g.ignore_eos());
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiRequest, UnsetFieldsStayUnsetForPrepareRequestsDefaults) {
  absl::StatusOr<OpenAiRequest> r = Completions(R"({"prompt": "x", "temperature": null, "max_tokens": null})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->request.sampling().has_temperature());
  EXPECT_FALSE(r->request.has_max_tokens());
  EXPECT_FALSE(r->max_tokens_set);
  EXPECT_FALSE(r->request.has_seed());
  EXPECT_FALSE(r->request.logprobs());
  EXPECT_FALSE(r->stream);
}

TEST(OpenAiRequest, PromptsAsTextOrTokenIds) {
  EXPECT_EQ(Completions(R"({"prompt": ["only one"]})")->request.text(), "only one");
  absl::StatusOr<OpenAiRequest> ids = Completions(R"({"prompt": [1, 2147483647, 0]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(ids->request.tokens().ids(), ::testing::ElementsAre(1, 2147483647, 0));
  EXPECT_THAT(Completions(R"({"prompt": [[5, 6]]})")->request.tokens().ids(), ::testing::ElementsAre(5, 6));
  std::string param;
  absl::StatusOr<OpenAiRequest> two = Completions(R"({"prompt": ["a", "b"]})", &param);
  EXPECT_THAT(two.status().message(), HasSubstr("holds 2 prompts"));
  EXPECT_EQ(param, "prompt");
  EXPECT_FALSE(Completions(R"({"prompt": [2147483648]})").ok());
  EXPECT_FALSE(Completions(R"({"prompt": [1.5]})").ok());
  EXPECT_FALSE(Completions(R"({"prompt": []})").ok());
  EXPECT_THAT(Completions(R"({"max_tokens": 4})").status().message(), HasSubstr("'prompt' is required"));
}

TEST(OpenAiRequest, ChatMessagesRolesPartsAndExtensions) {
  absl::StatusOr<OpenAiRequest> r = Chat(R"({"messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "name": "ann", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
      {"role": "assistant", "content": null, "tool_calls": []}],
    "max_completion_tokens": 9, "max_tokens": 100, "logprobs": true, "top_logprobs": 2,
    "chat_template_kwargs": {"enable_thinking": false}, "prompt_cache_key": "conversation-1",
    "tool_choice": "none", "response_format": {"type": "text"}})");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::ChatPrompt& chat = r->request.chat();
  ASSERT_EQ(chat.messages_size(), 3);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(1).content(), "one\ntwo");
  EXPECT_EQ(chat.messages(2).role(), "assistant");
  EXPECT_EQ(chat.messages(2).content(), "");
  EXPECT_EQ(r->request.max_tokens(), 9);  // max_completion_tokens wins
  EXPECT_TRUE(r->request.logprobs());
  EXPECT_EQ(r->request.top_logprobs(), 2);
  EXPECT_FALSE(chat.enable_thinking());
  EXPECT_EQ(r->request.session_id(), "conversation-1");
}

// Fields whose meaning ferry cannot honour are refused, naming the field.
TEST(OpenAiRequest, RefusalsNameTheField) {
  const struct {
    OpenAiEndpoint endpoint;
    const char* body;
    const char* param;
    const char* message;
  } cases[] = {
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "n": 2})", "n", "one choice per request"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "best_of": 3})", "best_of", "one choice per request"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "suffix": "end"})", "suffix", "fill in the middle"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "echo": true, "logprobs": 1})", "echo", "not supported"},
      {OpenAiEndpoint::kChat, R"({"messages": [], "tools": [{"type": "function"}]})", "tools", "tool"},
      {OpenAiEndpoint::kChat, R"({"messages": [], "tool_choice": "required"})", "tool_choice", "tool"},
      {OpenAiEndpoint::kChat, R"({"messages": [], "response_format": {"type": "json_object"}})", "response_format",
       "JSON mode"},
      {OpenAiEndpoint::kChat, R"({"messages": [], "modalities": ["text", "audio"]})", "modalities", "text only"},
      {OpenAiEndpoint::kChat, R"({"messages": [], "audio": {"voice": "x"}})", "audio", "text only"},
      {OpenAiEndpoint::kChat,
       R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
       "messages[0].content[0].type", "only text parts"},
      {OpenAiEndpoint::kChat, R"({"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]})",
       "messages[0].tool_calls", "tool calls"},
      {OpenAiEndpoint::kChat, R"({"messages": [{"role": "user"}]})", "messages[0].content", "is required"},
      {OpenAiEndpoint::kChat, R"({"messages": "hello"})", "messages", "must be a list"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "temperature": "hot"})", "temperature",
       "must be a number, got string"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens", "must be an integer"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "max_tokens": 3000000000})", "max_tokens", "is outside"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "seed": -1})", "seed", "is negative"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "stop": ["a", 1]})", "stop", "a string or a list"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "logit_bias": {"abc": 1}})", "logit_bias", "not a token id"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "stream": "yes"})", "stream", "must be a boolean"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "temperature": 1e300})", "temperature", "range of a float"},
      {OpenAiEndpoint::kCompletions, R"({"prompt": "x", "logit_bias": {"5": -1e39}})", "logit_bias.5",
       "range of a float"},
  };
  for (const auto& c : cases) {
    std::string param;
    absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(c.endpoint, c.body, &param);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(param, c.param) << c.body;
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.body;
  }
}

TEST(OpenAiRequest, MalformedBodies) {
  EXPECT_THAT(Completions("{\"prompt\": ").status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(Completions("[1, 2]").status().message(), HasSubstr("must be a JSON object"));
  EXPECT_THAT(Completions("{\"prompt\": \"\xff\"}").status().message(), HasSubstr("not valid JSON"));
}

TEST(OpenAiErrorJson, OpenAisShapeWithNullsForEmptyFields) {
  EXPECT_EQ(OpenAiErrorJson("bad \"n\"", "invalid_request_error", "n", ""),
            R"({"error":{"code":null,"message":"bad \"n\"","param":"n","type":"invalid_request_error"}})");
}

}  // namespace
}  // namespace ferry::service
