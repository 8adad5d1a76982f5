// What `ferry serve` accepts from a client: the limits every request is
// checked against before any work (service/requests.h), and the transport's.
#pragma once

namespace ferry::service {

struct ServeLimits {
  int max_queue = 64;                // requests waiting for a slot before RESOURCE_EXHAUSTED
  int max_prompt_tokens = 0;         // 0 = the context; also bounds prompt text bytes (requests.h)
  int max_output_tokens = 0;         // max_tokens ceiling; 0 = the context
  int max_stops = 16;                // stop sequences per request
  int max_stop_bytes = 256;          // length of one stop sequence
  int max_stop_token_ids = 64;       // stop_token_ids per request
  int max_session_bytes = 256;       // length of session_id
  int max_message_bytes = 4 << 20;   // a received message
  int max_streams_per_connection = 100;
  int min_ping_interval_ms = 10000;  // clients pinging more often (without data) are cut off
  int max_buffered_tokens = 1024;    // a stream whose client stops reading is cut off past this
};

}  // namespace ferry::service
