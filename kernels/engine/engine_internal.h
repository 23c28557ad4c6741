/* engine_internal.h - structures shared by the engine's C files (not public).
 *
 * One struct per idea (after llama2.c): nano_config (hyper-parameters from
 * "nano.config"), nano_linear (one weight matrix in whichever packed form the
 * file holds), nano_layer, nano_model (the mapping + bound weights), and
 * nano_context (KV cache + scratch + pool + history).
 */
#ifndef NANO_ENGINE_INTERNAL_H
#define NANO_ENGINE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "nano.h"
#include "nano_kernels.h"

/* ---- errors --------------------------------------------------------------- */
/* Set the calling thread's detailed message and return status. */
int nano_set_error(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- config --------------------------------------------------------------- */
typedef struct {
    int family;            /* NANO_FAMILY_* */
    int vocab_size, dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, max_seq_len;
    float norm_eps, rope_theta, rope_theta_local, query_pre_attn_scalar;
    int tie_embeddings, gelu, qk_norm, post_norms, embed_scale;
    int sliding_window, sliding_window_pattern;
} nano_config;

static inline int nano_layer_is_global(const nano_config *c, int i) {
    if (!c->sliding_window) return 1;
    int p = c->sliding_window_pattern;
    return i % p == p - 1;
}

/* ---- weights -------------------------------------------------------------- */
enum { LIN_Q4 = 1, LIN_Q8 = 2, LIN_F16 = 3, LIN_F32 = 4 };

typedef struct {
    int type;               /* LIN_* */
    int n, k;               /* logical [n, k] */
    nano_q4_matrix q4;
    nano_q8_matrix q8;
    const void *plain;      /* [n, k] fp16 or fp32 for LIN_F16 / LIN_F32 */
} nano_linear;

typedef struct {
    nano_linear wq, wk, wv, wo, w_gate, w_up, w_down;
    const float *attn_norm, *mlp_norm;            /* [dim] effective multipliers */
    const float *post_attn_norm, *post_mlp_norm;  /* [dim] or NULL               */
    const float *q_norm, *k_norm;                 /* [head_dim] or NULL          */
    int window;                                   /* 0 = global                  */
    float theta;
} nano_layer;

typedef struct {
    char *name;
    int dtype;              /* ST_* */
    int ndim;
    int64_t shape[4];
    const uint8_t *data;
    size_t nbytes;
    int used;
} st_tensor;

enum { ST_U8 = 1, ST_I8, ST_F16, ST_F32, ST_BF16, ST_I32, ST_I64, ST_F64, ST_BOOL, ST_I16, ST_U16 };

typedef struct {
    char *key, *value;
} st_meta;

struct nano_model {
    uint8_t *map;           /* whole file, read-only */
    size_t map_bytes;
    size_t alloc_bytes;     /* length to munmap (no_mmap rounds up to 2 MiB) */
    st_tensor *tensors;
    int n_tensors;
    st_meta *meta;
    int n_meta;
    nano_config cfg;
    nano_linear embed;      /* [vocab, dim]: Q8 / F16 / F32 (Q4 allowed) */
    nano_linear head;       /* [vocab, dim]; == embed when tied          */
    const float *final_norm;
    nano_layer *layers;
    void **owned;           /* buffers copied for alignment / converted norms */
    int n_owned, cap_owned;
};

/* ---- context -------------------------------------------------------------- */
struct nano_context {
    nano_model *model;
    nano_context_params params;
    nano_plan plan;
    nano_pool *pool;
    int n_threads;
    int n_ctx, n_batch, kv_type;
    /* KV cache, per layer l: cap[l] slots (n_ctx for global layers, a ring of
     * window + n_batch for local ones). Layout [n_kv, cap, hd]. */
    int *cap;
    void *kv_arena;         /* every layer's cache, one allocation (see kv_alloc) */
    uint16_t **k16, **v16;  /* fp16 cache */
    int8_t **k8, **v8;      /* int8 cache: q [n_kv, cap, hd] */
    float **ks, **vs;       /*             scale [n_kv, cap]  */
    /* scratch (sizes for n_batch rows) */
    float *x;               /* [B, dim]    residual stream          */
    float *xb;              /* [B, dim]    normed input             */
    float *q;               /* [B, q_dim]                           */
    float *k, *v;           /* [B, kv_dim]                          */
    float *att;             /* [B, q_dim]  attention output         */
    float *hb, *hb2;        /* [B, hidden]                          */
    float *h;               /* [B, dim]    block output            */
    float *rope;            /* [2 thetas][B][cos|sin][hd/2]         */
    float *scores;          /* [n_threads, n_heads / n_kv_heads, n_ctx] */
    float *attn_scratch;    /* [n_threads, attn_scratch_floats]     */
    size_t attn_scratch_floats;
    void *actbuf;           /* q8 activations for [B, max(dim, q_dim, hidden)] */
    size_t actbuf_bytes;
    nano_q8_act act;
    float *logits;          /* [vocab] last position               */
    float *probs;           /* [vocab] sampler scratch             */
    int32_t *idx;           /* [vocab] sampler scratch             */
    uint8_t *seen;          /* [vocab] sampler scratch             */
    int32_t *tokens;        /* [n_ctx] history                     */
    int n_past;
    int have_logits;
    atomic_int cancel;
    uint64_t rng;
    /* stats */
    int64_t prefill_tokens, decode_tokens;
    double prefill_s, decode_s;
    int64_t scratch_bytes, kv_bytes;
};

/* model_load.c */
int nano_config_from_json(const char *json, size_t len, nano_config *cfg, char *err, size_t errlen);

/* forward.c: run tokens[0..n) at positions n_past.. ; logits_all [n, vocab] or NULL */
/* need_logits == 0 (an earlier chunk of a longer prompt, logits_all NULL) skips the
 * final norm and the output head: only the KV cache and the token history advance. */
int nano_forward(nano_context *ctx, const int32_t *tokens, int n, float *logits_all, int need_logits);
int nano_linear_matmul(nano_context *ctx, const nano_linear *w, const float *x, float *y, int m,
                       int x_quantized);
float nano_f16_lut(uint16_t h);
size_t nano_attn_scratch_floats(int head_dim, int n_heads);
void nano_f16_lut_init(void);

/* sampler.c */
int32_t nano_sample(nano_context *ctx, const float *logits, const nano_sampler_params *p);

/* plan (engine.c) */
int64_t nano_kv_bytes(const nano_config *c, int n_ctx, int n_batch, int kv_type);
int64_t nano_scratch_bytes(const nano_config *c, int n_ctx, int n_batch, int n_threads);

double nano_now(void);

#endif
