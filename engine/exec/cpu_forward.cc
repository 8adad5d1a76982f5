#include "engine/exec/cpu_forward.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/quant/half.h"
#include "engine/quant/quantize.h"

namespace ferry::exec {

using model::RopeLayout;

absl::StatusOr<std::unique_ptr<CpuForward>> CpuForward::Create(const model::Model& model,
                                                                const ForwardOptions& options) {
  const model::ModelConfig& c = model.config;
  if (options.max_batch <= 0 || options.n_seq <= 0 || options.n_ctx < 0) {
    return absl::InvalidArgumentError("max_batch and n_seq must be positive, n_ctx non-negative");
  }
  const int n_ctx = options.n_ctx > 0 ? options.n_ctx : std::min(c.n_ctx_train, 4096);
  return std::unique_ptr<CpuForward>(new CpuForward(model, options, n_ctx));
}

CpuForward::CpuForward(const model::Model& model, const ForwardOptions& options, int n_ctx)
    : model_(model),
      config_(model.config),
      options_(options),
      n_ctx_(n_ctx),
      pool_(options.threads),
      scratch_(pool_.size(), std::max<int64_t>({config_.n_embd, config_.n_ff, config_.q_dim()}), options.max_batch) {
  const model::ModelConfig& c = config_;
  const size_t b = options.max_batch;
  x_.resize(b * c.n_embd);
  xn_.resize(b * c.n_embd);
  out_.resize(b * c.n_embd);
  q_.resize(b * c.q_dim());
  attn_.resize(b * c.q_dim());
  k_.resize(b * c.kv_dim());
  v_.resize(b * c.v_dim());
  gate_.resize(b * c.n_ff);
  up_.resize(b * c.n_ff);
  scores_.resize(static_cast<size_t>(pool_.size()) * n_ctx);
  // theta_i = pos * freq_scale * base^(-2i / rope_dims) / factor_i
  for (int i = 0; i < c.rope_dims / 2; ++i) {
    double f = c.rope_freq_scale * std::pow(static_cast<double>(c.rope_base), -2.0 * i / c.rope_dims);
    if (!model.weights.rope_freq_factors.empty()) f /= model.weights.rope_freq_factors[i];
    inv_freq_.push_back(static_cast<float>(f));
  }
  const size_t per_layer = static_cast<size_t>(options.n_seq) * n_ctx * c.kv_dim();
  if (options.kv_type == KvType::kF16) {
    k16_.assign(c.n_layer, std::vector<uint16_t>(per_layer));
    v16_.assign(c.n_layer, std::vector<uint16_t>(per_layer));
    kv_bytes_ = 2ull * c.n_layer * per_layer * sizeof(uint16_t);
  } else {
    k32_.assign(c.n_layer, std::vector<float>(per_layer));
    v32_.assign(c.n_layer, std::vector<float>(per_layer));
    kv_bytes_ = 2ull * c.n_layer * per_layer * sizeof(float);
  }
}

void CpuForward::Rope(float* v, int n_heads, int pos) const {
  const model::ModelConfig& c = config_;
  const int half = c.rope_dims / 2;
  for (int i = 0; i < half; ++i) {
    const double theta = static_cast<double>(pos) * inv_freq_[i];
    const float cs = static_cast<float>(std::cos(theta)), sn = static_cast<float>(std::sin(theta));
    for (int h = 0; h < n_heads; ++h) {
      float* head = v + static_cast<size_t>(h) * c.head_dim;
      // Normal layout rotates (2i, 2i+1); NeoX rotates (i, i + rope_dims/2).
      const int a = c.rope_layout == RopeLayout::kNormal ? 2 * i : i;
      const int b = c.rope_layout == RopeLayout::kNormal ? 2 * i + 1 : i + half;
      const float x0 = head[a], x1 = head[b];
      head[a] = x0 * cs - x1 * sn;
      head[b] = x0 * sn + x1 * cs;
    }
  }
}

void CpuForward::StoreKv(int layer, const BatchToken& t, const float* k, const float* v) {
  const int kv_dim = config_.kv_dim();
  const size_t at = (static_cast<size_t>(t.seq) * n_ctx_ + t.pos) * kv_dim;
  if (options_.kv_type == KvType::kF16) {
    for (int i = 0; i < kv_dim; ++i) {
      k16_[layer][at + i] = quant::FloatToHalf(k[i]);
      v16_[layer][at + i] = quant::FloatToHalf(v[i]);
    }
  } else {
    std::copy(k, k + kv_dim, k32_[layer].begin() + at);
    std::copy(v, v + kv_dim, v32_[layer].begin() + at);
  }
}

void CpuForward::Attention(int layer, std::span<const BatchToken> batch) {
  const model::ModelConfig& c = config_;
  const int hd = c.head_dim, kv_dim = c.kv_dim(), group = c.n_head / c.n_head_kv;
  const bool f16 = options_.kv_type == KvType::kF16;
  const int window = c.LayerIsSliding(layer) ? c.sliding_window : 0;
  pool_.ParallelFor(static_cast<int64_t>(batch.size()) * c.n_head, [&](int thread, int64_t begin, int64_t end) {
    float* scores = scores_.data() + static_cast<size_t>(thread) * n_ctx_;
    for (int64_t item = begin; item < end; ++item) {
      const int t = static_cast<int>(item / c.n_head), h = static_cast<int>(item % c.n_head), kvh = h / group;
      const BatchToken& tok = batch[t];
      const float* q = q_.data() + static_cast<size_t>(t) * c.q_dim() + h * hd;
      const size_t seq_base = static_cast<size_t>(tok.seq) * n_ctx_ * kv_dim + kvh * hd;
      // Sliding layers see the last `window` positions, the query's included.
      const int lo = window > 0 ? std::max(0, tok.pos - window + 1) : 0;
      const int n = tok.pos - lo + 1;
      for (int j = 0; j < n; ++j) {
        const size_t at = seq_base + static_cast<size_t>(lo + j) * kv_dim;
        float s = 0.0f;
        if (f16) {
          s = cpu::DotF16(q, k16_[layer].data() + at, hd);
        } else {
          s = cpu::Dot(q, k32_[layer].data() + at, hd);
        }
        s *= c.query_scale;
        if (c.attn_softcap > 0.0f) s = c.attn_softcap * std::tanh(s / c.attn_softcap);
        scores[j] = s;
      }
      cpu::Softmax(scores, n);
      float* out = attn_.data() + static_cast<size_t>(t) * c.q_dim() + h * hd;
      std::fill(out, out + hd, 0.0f);
      for (int j = 0; j < n; ++j) {
        const size_t at = seq_base + static_cast<size_t>(lo + j) * kv_dim;
        const float p = scores[j];
        if (f16) {
          cpu::AxpyF16(p, v16_[layer].data() + at, out, hd);
        } else {
          const float* vr = v32_[layer].data() + at;
          for (int d = 0; d < hd; ++d) out[d] += p * vr[d];
        }
      }
    }
  }, static_cast<int64_t>(batch.size()) * c.n_head * hd * (batch.back().pos + 1), 1 << 16);
}

absl::Status CpuForward::Forward(std::span<const BatchToken> batch, std::span<float> logits) {
  const model::ModelConfig& c = config_;
  const model::ModelWeights& w = model_.weights;
  const int n = static_cast<int>(batch.size());
  if (n == 0) return absl::OkStatus();
  if (n > options_.max_batch) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", n, " tokens exceeds max_batch ", options_.max_batch));
  }
  size_t n_logits = 0;
  for (const BatchToken& t : batch) {
    if (t.token < 0 || t.token >= c.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", t.token, " outside the vocabulary [0, ", c.n_vocab, ")"));
    }
    if (t.seq < 0 || t.seq >= options_.n_seq) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", t.seq, " outside [0, ", options_.n_seq, ")"));
    }
    if (t.pos < 0 || t.pos >= n_ctx_) {
      return absl::InvalidArgumentError(absl::StrCat("position ", t.pos, " outside the context [0, ", n_ctx_, ")"));
    }
    n_logits += t.logits;
  }
  if (logits.size() < n_logits * c.n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("logits buffer holds ", logits.size(), " floats, need ",
                                                   n_logits * c.n_vocab));
  }

  const int E = c.n_embd;
  const quant::DequantizeFn decode_embd = quant::GetDequantizer(w.token_embd.type);
  for (int t = 0; t < n; ++t) {
    float* x = x_.data() + static_cast<size_t>(t) * E;
    decode_embd(w.token_embd.row(batch[t].token), E, x);
    if (c.embed_scale != 1.0f) {
      for (int i = 0; i < E; ++i) x[i] *= c.embed_scale;
    }
  }

  for (int l = 0; l < c.n_layer; ++l) {
    const model::LayerWeights& L = w.layers[l];
    for (int t = 0; t < n; ++t) cpu::RmsNorm(x_.data() + t * E, L.attn_norm.data(), E, c.norm_eps, xn_.data() + t * E);
    cpu::MatMul(L.wq, xn_.data(), E, n, q_.data(), c.q_dim(), pool_, scratch_);
    cpu::MatMul(L.wk, xn_.data(), E, n, k_.data(), c.kv_dim(), pool_, scratch_);
    cpu::MatMul(L.wv, xn_.data(), E, n, v_.data(), c.v_dim(), pool_, scratch_);
    for (int t = 0; t < n; ++t) {
      float* q = q_.data() + static_cast<size_t>(t) * c.q_dim();
      float* k = k_.data() + static_cast<size_t>(t) * c.kv_dim();
      float* v = v_.data() + static_cast<size_t>(t) * c.v_dim();
      if (c.qkv_bias) {
        for (int i = 0; i < c.q_dim(); ++i) q[i] += L.bq[i];
        for (int i = 0; i < c.kv_dim(); ++i) k[i] += L.bk[i], v[i] += L.bv[i];
      }
      Rope(q, c.n_head, batch[t].pos);
      Rope(k, c.n_head_kv, batch[t].pos);
      StoreKv(l, batch[t], k, v);
    }
    Attention(l, batch);
    cpu::MatMul(L.wo, attn_.data(), c.q_dim(), n, out_.data(), E, pool_, scratch_);
    for (int t = 0; t < n; ++t) {
      float* o = out_.data() + t * E;
      if (c.post_norms) cpu::RmsNorm(o, L.post_attn_norm.data(), E, c.norm_eps, o);
      float* x = x_.data() + t * E;
      for (int i = 0; i < E; ++i) x[i] += o[i];
      cpu::RmsNorm(x, L.ffn_norm.data(), E, c.norm_eps, xn_.data() + t * E);
    }
    cpu::MatMul(L.w_gate, xn_.data(), E, n, gate_.data(), c.n_ff, pool_, scratch_);
    cpu::MatMul(L.w_up, xn_.data(), E, n, up_.data(), c.n_ff, pool_, scratch_);
    const size_t ff = static_cast<size_t>(n) * c.n_ff;
    if (c.activation == model::Activation::kSilu) {
      for (size_t i = 0; i < ff; ++i) gate_[i] = cpu::Silu(gate_[i]) * up_[i];
    } else {
      for (size_t i = 0; i < ff; ++i) gate_[i] = cpu::GeluTanh(gate_[i]) * up_[i];
    }
    cpu::MatMul(L.w_down, gate_.data(), c.n_ff, n, out_.data(), E, pool_, scratch_);
    for (int t = 0; t < n; ++t) {
      float* o = out_.data() + t * E;
      if (c.post_norms) cpu::RmsNorm(o, L.post_ffn_norm.data(), E, c.norm_eps, o);
      float* x = x_.data() + t * E;
      for (int i = 0; i < E; ++i) x[i] += o[i];
    }
  }

  // The head only for the tokens that want logits, packed in batch order.
  int m = 0;
  for (int t = 0; t < n; ++t) {
    if (!batch[t].logits) continue;
    cpu::RmsNorm(x_.data() + t * E, w.output_norm.data(), E, c.norm_eps, xn_.data() + m * E);
    ++m;
  }
  cpu::MatMul(w.output, xn_.data(), E, m, logits.data(), c.n_vocab, pool_, scratch_);
  if (c.final_softcap > 0.0f) {
    for (size_t i = 0; i < static_cast<size_t>(m) * c.n_vocab; ++i) {
      logits[i] = c.final_softcap * std::tanh(logits[i] / c.final_softcap);
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::exec
