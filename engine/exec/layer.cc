#include "engine/exec/layer.h"

namespace ferry::exec {

void RunLayer(const model::ModelConfig& c, int l, const model::UnitView& w, const StepShape& step, Lane& lane) {
  backend::Device& d = *lane.device;
  const Activations& a = lane.act;
  const int n = static_cast<int>(step.tokens.size());
  const int E = c.n_embd;
  d.RmsNormBefore(w.wq, a.x, n, E, w.attn_norm, c.norm_eps, a.xn);
  const backend::MatMulOut qkv[] = {{&w.wq, a.q, c.q_dim()}, {&w.wk, a.k, c.kv_dim()}, {&w.wv, a.v, c.v_dim()}};
  d.MatMulShared(qkv, a.xn, E, n);
  if (c.qkv_bias) {
    d.AddRowBias(a.q, n, c.q_dim(), w.bq);
    d.AddRowBias(a.k, n, c.kv_dim(), w.bk);
    d.AddRowBias(a.v, n, c.v_dim(), w.bv);
  }
  if (c.qk_norm) {  // each head of q and k on its own: rows of head_dim
    d.RmsNorm(a.q, n * c.n_head, c.head_dim, w.q_norm, c.norm_eps, a.q);
    d.RmsNorm(a.k, n * c.n_head_kv, c.head_dim, w.k_norm, c.norm_eps, a.k);
  }
  d.RopeQK(a.q, c.n_head, a.k, c.n_head_kv, n, step.tokens, step.rope->WithSet(c.LayerRopeSet(l)));
  d.StoreKv(lane.kv[l], a.k, a.v, step.tokens);
  const backend::AttentionShape shape{c.n_head, c.n_head_kv, c.head_dim, c.query_scale, c.attn_softcap,
                                      c.LayerIsSliding(l) ? c.sliding_window : 0};
  d.Attention(a.q, lane.kv[l], step.tokens, shape, a.scores, a.attn);
  // Gemma normalizes each sublayer's output before the residual add; the
  // others add the product to the residual in its own launch where they can.
  if (c.post_norms) {
    d.MatMul(w.wo, a.attn, c.q_dim(), n, a.out, E);
    d.RmsNorm(a.out, n, E, w.post_attn_norm, c.norm_eps, a.out);
    d.Add(a.x, a.out, static_cast<int64_t>(n) * E);
  } else {
    d.MatMulAdd(w.wo, a.attn, c.q_dim(), n, a.out, a.x, E);
  }
  d.RmsNormBefore(w.w_gate, a.x, n, E, w.ffn_norm, c.norm_eps, a.xn);
  d.GatedMatMul(w.w_gate, w.w_up, a.xn, E, n, a.gate, a.up, c.n_ff, c.activation);
  if (c.post_norms) {
    d.MatMul(w.w_down, a.gate, c.n_ff, n, a.out, E);
    d.RmsNorm(a.out, n, E, w.post_ffn_norm, c.norm_eps, a.out);
    d.Add(a.x, a.out, static_cast<int64_t>(n) * E);
  } else {
    d.MatMulAdd(w.w_down, a.gate, c.n_ff, n, a.out, a.x, E);
  }
}

void RunHead(const model::ModelConfig& c, const model::UnitView& w, const StepShape& step, Lane& lane) {
  backend::Device& d = *lane.device;
  const Activations& a = lane.act;
  const int m = static_cast<int>(step.logit_rows.size());
  d.GatherRows(a.x, step.logit_rows, c.n_embd, a.out);
  d.RmsNormBefore(w.output, a.out, m, c.n_embd, w.output_norm, c.norm_eps, a.xn);
  d.MatMul(w.output, a.xn, c.n_embd, m, a.logits, c.n_vocab);
  if (c.final_softcap > 0.0f) d.SoftCap(a.logits, static_cast<int64_t>(m) * c.n_vocab, c.final_softcap);
}

void RunUnit(const model::ModelConfig& c, int u, const model::UnitView& w, const StepShape& step, Lane& lane) {
  if (u == c.n_layer) {
    RunHead(c, w, step, lane);
  } else {
    RunLayer(c, u, w, step, lane);
  }
}

}  // namespace ferry::exec
