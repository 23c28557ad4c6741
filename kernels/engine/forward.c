/* forward.c - the transformer forward pass for one batch of T <= n_batch tokens.
 *
 *   x = embed(tokens) [* sqrt(dim)]                                [T, dim]
 *   per layer: x += [post_attn_norm] attn(attn_norm(x))
 *              x += [post_mlp_norm]  mlp(mlp_norm(x))
 *   logits = head(norm(x))      (last row only, or every row)      [T|1, vocab]
 *
 * It follows nano_runtime/model.py (the reference) operation by operation:
 * RMSNorm in fp32 with the stored effective multiplier, QK-norm before RoPE,
 * half-split RoPE per layer base, grouped-query attention with a causal mask
 * and, on local layers, the window p - window < key <= p, scale
 * query_pre_attn_scalar^-0.5, SwiGLU or GeGLU(tanh).
 *
 * Matmuls go through the kernels: with int8-quantized activations by default
 * (nano_*_matmul_q8act), fp32 activations when params.precise is set. Prefill
 * (T > 1) uses the same kernels with m = T (GEMM), decode m = 1 (GEMV).
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "engine_internal.h"

/* ---- fp16 -> fp32 table (attention over an fp16 KV cache) ----------------- */
static float F16_TABLE[65536];
static pthread_once_t F16_ONCE = PTHREAD_ONCE_INIT;
static void f16_init(void) {
    for (int i = 0; i < 65536; i++) F16_TABLE[i] = nano_fp16_to_fp32((uint16_t)i);
}
void nano_f16_lut_init(void) { pthread_once(&F16_ONCE, f16_init); }
float nano_f16_lut(uint16_t h) { return F16_TABLE[h]; }

/* ---- matmul dispatch -------------------------------------------------------- */
typedef struct {
    const nano_linear *w;
    const float *x;
    float *y;
    int m;
} plain_job;

static void plain_task(void *arg, int tid, int nth) {
    plain_job *j = arg;
    const nano_linear *w = j->w;
    int n = w->n, k = w->k;
    int per = (n + nth - 1) / nth, lo = tid * per, hi = lo + per < n ? lo + per : n;
    for (int r = lo; r < hi; r++) {
        for (int i = 0; i < j->m; i++) {
            const float *x = j->x + (size_t)i * k;
            float s = 0;
            if (w->type == LIN_F32) {
                const float *row = (const float *)w->plain + (size_t)r * k;
                for (int c = 0; c < k; c++) s += row[c] * x[c];
            } else {
                const uint16_t *row = (const uint16_t *)w->plain + (size_t)r * k;
                for (int c = 0; c < k; c++) s += F16_TABLE[row[c]] * x[c];
            }
            j->y[(size_t)i * n + r] = s;
        }
    }
}

/* y [m, w->n] = x [m, w->k] W^T. When !precise, ctx->act must already hold x
 * quantized (x_quantized = 1) or is filled here. */
int nano_linear_matmul(nano_context *ctx, const nano_linear *w, const float *x, float *y, int m,
                       int x_quantized) {
    int rc = NANO_K_OK;
    int precise = ctx->params.precise;
    if ((w->type == LIN_Q4 || w->type == LIN_Q8) && !precise && !x_quantized) {
        rc = nano_q8_act_init(&ctx->act, ctx->actbuf, ctx->actbuf_bytes, m, w->k);
        if (!rc) rc = nano_quantize_act_q8(x, m, w->k, &ctx->act, ctx->pool);
        if (rc) goto out;
    }
    switch (w->type) {
    case LIN_Q4:
        rc = precise ? nano_q4_matmul_f32(&w->q4, x, y, m, ctx->pool)
                     : nano_q4_matmul_q8act(&w->q4, &ctx->act, y, ctx->pool);
        break;
    case LIN_Q8:
        rc = precise ? nano_q8_matmul_f32(&w->q8, x, y, m, ctx->pool)
                     : nano_q8_matmul_q8act(&w->q8, &ctx->act, y, ctx->pool);
        break;
    default: {
        plain_job j = {w, x, y, m};
        rc = nano_pool_run(ctx->pool, plain_task, &j);
    }
    }
out:
    if (rc) return nano_set_error(NANO_ERR_KERNEL, "kernel error: %s", nano_kernel_status_string(rc));
    return NANO_OK;
}

/* The gated MLP activation, split across the pool in 64-float aligned chunks. */
typedef struct {
    float *a;
    const float *b;
    size_t n;
    int gelu;
} glu_job;

static void glu_task(void *arg, int tid, int nth) {
    glu_job *j = arg;
    size_t per = ((j->n + nth - 1) / nth + 63) / 64 * 64, lo = (size_t)tid * per;
    if (lo >= j->n) return;
    size_t cnt = j->n - lo < per ? j->n - lo : per;
    nano_glu(j->a + lo, j->b + lo, cnt, j->gelu);
}

/* Quantize x [m, k] into ctx->act once for several matmuls sharing the input. */
static int quantize_input(nano_context *ctx, const float *x, int m, int k) {
    if (ctx->params.precise) return NANO_OK;
    int rc = nano_q8_act_init(&ctx->act, ctx->actbuf, ctx->actbuf_bytes, m, k);
    if (!rc) rc = nano_quantize_act_q8(x, m, k, &ctx->act, ctx->pool);
    if (rc) return nano_set_error(NANO_ERR_KERNEL, "kernel error: %s", nano_kernel_status_string(rc));
    return NANO_OK;
}

/* Several matmuls on the same (already quantized, when !precise) input: one pool
 * dispatch when they are all int4 on the int8 path, else one call each. */
static int linear_multi(nano_context *ctx, const nano_linear *const *ws, float *const *ys, int count,
                        const float *x, int m) {
    int all_q4 = !ctx->params.precise;
    for (int i = 0; i < count; i++) all_q4 = all_q4 && ws[i]->type == LIN_Q4;
    if (all_q4) {
        const nano_q4_matrix *qs[4];
        for (int i = 0; i < count; i++) qs[i] = &ws[i]->q4;
        int rc = nano_q4_matmul_q8act_multi(qs, ys, count, &ctx->act, ctx->pool);
        if (rc) return nano_set_error(NANO_ERR_KERNEL, "kernel error: %s", nano_kernel_status_string(rc));
        return NANO_OK;
    }
    for (int i = 0; i < count; i++) {
        int rc = nano_linear_matmul(ctx, ws[i], x, ys[i], m, 1);
        if (rc) return rc;
    }
    return NANO_OK;
}

/* ---- elementwise ------------------------------------------------------------ */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

static void embed_row(const nano_model *m, int32_t tok, float *out) {
    const nano_linear *e = &m->embed;
    switch (e->type) {
    case LIN_Q8: nano_q8_dequant_row(&e->q8, tok, out); break;
    case LIN_Q4: nano_q4_dequant_row(&e->q4, tok, out); break;
    case LIN_F16: {
        const uint16_t *r = (const uint16_t *)e->plain + (size_t)tok * e->k;
        for (int i = 0; i < e->k; i++) out[i] = F16_TABLE[r[i]];
        break;
    }
    default: memcpy(out, (const float *)e->plain + (size_t)tok * e->k, (size_t)e->k * sizeof(float));
    }
}

/* cos/sin [T][half] at positions pos0.. for base theta (float32, like torch). */
static void rope_table(float *cs, int T, int pos0, int hd, float theta) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float inv = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        for (int t = 0; t < T; t++) {
            float a = (float)(pos0 + t) * inv;
            cs[(size_t)t * hd + i] = cosf(a);
            cs[(size_t)t * hd + half + i] = sinf(a);
        }
    }
}

static void rope_apply(float *x, const float *cs, int hd) {
    int half = hd / 2;
    const float *c = cs, *s = cs + half;
    for (int i = 0; i < half; i++) {
        float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + half] = x2 * c[i] + x1 * s[i];
    }
}

/* ---- attention --------------------------------------------------------------
 * One task per (query row t, kv head, group of the query heads sharing that kv head),
 * kv head major. A task walks the key range [lo, p] once for its whole group (grouped-
 * query attention: each cached K/V row is read and converted once for all the group's
 * heads), scores going to the thread's rows of ctx->scores (rep x n_ctx floats), then an
 * exact two-pass softmax per head and the weighted sum of V. When there are too few
 * tasks to keep the threads busy (decode with few kv heads) the groups are split. The
 * key range is walked in runs of contiguous cache slots (a ring buffer wraps at most
 * once), each run through the vectorized inner loops of nano_attn_ops
 * (kernels/src/attn*.c). Decode (T = 1) and prefill share it. */
typedef struct {
    nano_context *ctx;
    int layer, T, pos0;
    const nano_attn_ops *ops;
} attn_job;

static void attn_task(void *arg, int tid, int nth) {
    attn_job *j = arg;
    nano_context *ctx = j->ctx;
    const nano_attn_ops *ops = j->ops;
    const nano_config *c = &ctx->model->cfg;
    const nano_layer *L = &ctx->model->layers[j->layer];
    const int H = c->n_heads, hd = c->head_dim, rep = c->n_heads / c->n_kv_heads;
    const int qdim = H * hd, cap = ctx->cap[j->layer], T = j->T, l = j->layer;
    const int f16 = ctx->kv_type == NANO_KV_F16, nctx = ctx->n_ctx;
    const float scale = 1.0f / sqrtf(c->query_pre_attn_scalar);
    const int cold = T == 1; /* decode: the cache rows were evicted by the weight stream */
    int nsplit = 1;
    while (nsplit < rep && T * c->n_kv_heads * nsplit < 2 * nth) nsplit++;
    const int gs = (rep + nsplit - 1) / nsplit, per_kv = (rep + gs - 1) / gs;
    const int N = T * c->n_kv_heads * per_kv;
    float *sc = ctx->scores + (size_t)tid * nctx * rep;
    for (int i = tid; i < N; i += nth) {
        const int kvh = i / (T * per_kv), rem = i % (T * per_kv);
        const int t = rem / per_kv, sub = rem % per_kv, p = j->pos0 + t;
        const int h0 = kvh * rep + sub * gs, G = rep - sub * gs < gs ? rep - sub * gs : gs;
        const float *q = ctx->q + (size_t)t * qdim + (size_t)h0 * hd;
        const int lo = L->window ? (p - L->window + 1 > 0 ? p - L->window + 1 : 0) : 0;
        const size_t base = (size_t)kvh * cap;
        for (int pos = lo; pos <= p;) {
            const int s0 = pos % cap, len = p - pos + 1 < cap - s0 ? p - pos + 1 : cap - s0;
            const size_t slot = base + (size_t)s0;
            if (f16) ops->scores_f16_g(q, G, ctx->k16[l] + slot * hd, len, hd, scale, sc + (pos - lo), nctx, cold);
            else ops->scores_i8_g(q, G, ctx->k8[l] + slot * hd, ctx->ks[l] + slot, len, hd, scale,
                                  sc + (pos - lo), nctx, cold);
            pos += len;
        }
        const int n = p - lo + 1;
        for (int g = 0; g < G; g++) ops->softmax(sc + (size_t)g * nctx, n);
        float *out = ctx->att + (size_t)t * qdim + (size_t)h0 * hd;
        memset(out, 0, (size_t)G * hd * sizeof *out);
        for (int pos = lo; pos <= p;) {
            const int s0 = pos % cap, len = p - pos + 1 < cap - s0 ? p - pos + 1 : cap - s0;
            const size_t slot = base + (size_t)s0;
            if (f16) ops->accum_f16_g(sc + (pos - lo), nctx, G, ctx->v16[l] + slot * hd, len, hd, out, cold);
            else ops->accum_i8_g(sc + (pos - lo), nctx, G, ctx->v8[l] + slot * hd, ctx->vs[l] + slot,
                                 len, hd, out, cold);
            pos += len;
        }
    }
}

/* attention needs no scratch beyond ctx->scores now; kept for the engine's memory plan */
size_t nano_attn_scratch_floats(int head_dim, int n_heads) {
    (void)head_dim;
    (void)n_heads;
    return 16;
}

static void kv_store(nano_context *ctx, int l, int T, int pos0, const nano_attn_ops *ops) {
    const nano_config *c = &ctx->model->cfg;
    int hd = c->head_dim, nkv = c->n_kv_heads, cap = ctx->cap[l], kvd = nkv * hd;
    for (int t = 0; t < T; t++) {
        int slot = (pos0 + t) % cap;
        for (int h = 0; h < nkv; h++) {
            const float *k = ctx->k + (size_t)t * kvd + (size_t)h * hd;
            const float *v = ctx->v + (size_t)t * kvd + (size_t)h * hd;
            size_t s = (size_t)h * cap + (size_t)slot;
            if (ctx->kv_type == NANO_KV_F16) {
                ops->to_f16(k, ctx->k16[l] + s * hd, hd);
                ops->to_f16(v, ctx->v16[l] + s * hd, hd);
            } else {
                const float *src[2] = {k, v};
                int8_t *dst[2] = {ctx->k8[l] + s * hd, ctx->v8[l] + s * hd};
                float *scl[2] = {&ctx->ks[l][s], &ctx->vs[l][s]};
                for (int z = 0; z < 2; z++) {
                    float amax = 0;
                    for (int d = 0; d < hd; d++) amax = fmaxf(amax, fabsf(src[z][d]));
                    float sc = amax / 127.0f, inv = sc > 0 ? 1.0f / sc : 0;
                    for (int d = 0; d < hd; d++) dst[z][d] = (int8_t)lrintf(src[z][d] * inv);
                    *scl[z] = sc;
                }
            }
        }
    }
}

/* ---- one block -------------------------------------------------------------- */
static int layer_forward(nano_context *ctx, int l, int T, int pos0) {
    const nano_config *c = &ctx->model->cfg;
    const nano_layer *L = &ctx->model->layers[l];
    int dim = c->dim, hd = c->head_dim, H = c->n_heads, nkv = c->n_kv_heads;
    int qdim = H * hd, kvd = nkv * hd, hid = c->hidden_dim;
    int rc;
    for (int t = 0; t < T; t++)
        rmsnorm(ctx->xb + (size_t)t * dim, ctx->x + (size_t)t * dim, L->attn_norm, dim, c->norm_eps);
    if ((rc = quantize_input(ctx, ctx->xb, T, dim))) return rc;
    {
        const nano_linear *ws[3] = {&L->wq, &L->wk, &L->wv};
        float *ys[3] = {ctx->q, ctx->k, ctx->v};
        if ((rc = linear_multi(ctx, ws, ys, 3, ctx->xb, T))) return rc;
    }
    const float *cs = ctx->rope + (L->window ? (size_t)T * hd : 0);
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            float *q = ctx->q + (size_t)t * qdim + (size_t)h * hd;
            if (L->q_norm) rmsnorm(q, q, L->q_norm, hd, c->norm_eps);
            rope_apply(q, cs + (size_t)t * hd, hd);
        }
        for (int h = 0; h < nkv; h++) {
            float *k = ctx->k + (size_t)t * kvd + (size_t)h * hd;
            if (L->k_norm) rmsnorm(k, k, L->k_norm, hd, c->norm_eps);
            rope_apply(k, cs + (size_t)t * hd, hd);
        }
    }
    attn_job job = {ctx, l, T, pos0, nano_attn_ops_get(hd)};
    kv_store(ctx, l, T, pos0, job.ops);
    if ((rc = nano_pool_run(ctx->pool, attn_task, &job)))
        return nano_set_error(NANO_ERR_KERNEL, "thread pool: %s", nano_kernel_status_string(rc));
    if ((rc = nano_linear_matmul(ctx, &L->wo, ctx->att, ctx->h, T, 0))) return rc;
    for (int t = 0; t < T; t++) {
        float *h = ctx->h + (size_t)t * dim, *x = ctx->x + (size_t)t * dim;
        if (L->post_attn_norm) rmsnorm(h, h, L->post_attn_norm, dim, c->norm_eps);
        for (int i = 0; i < dim; i++) x[i] += h[i];
        rmsnorm(ctx->xb + (size_t)t * dim, x, L->mlp_norm, dim, c->norm_eps);
    }
    if ((rc = quantize_input(ctx, ctx->xb, T, dim))) return rc;
    {
        const nano_linear *ws[2] = {&L->w_gate, &L->w_up};
        float *ys[2] = {ctx->hb, ctx->hb2};
        if ((rc = linear_multi(ctx, ws, ys, 2, ctx->xb, T))) return rc;
    }
    glu_job gj = {ctx->hb, ctx->hb2, (size_t)T * hid, c->gelu};
    if ((rc = nano_pool_run(ctx->pool, glu_task, &gj)))
        return nano_set_error(NANO_ERR_KERNEL, "thread pool: %s", nano_kernel_status_string(rc));
    if ((rc = nano_linear_matmul(ctx, &L->w_down, ctx->hb, ctx->h, T, 0))) return rc;
    for (int t = 0; t < T; t++) {
        float *h = ctx->h + (size_t)t * dim, *x = ctx->x + (size_t)t * dim;
        if (L->post_mlp_norm) rmsnorm(h, h, L->post_mlp_norm, dim, c->norm_eps);
        for (int i = 0; i < dim; i++) x[i] += h[i];
    }
    return NANO_OK;
}

int nano_forward(nano_context *ctx, const int32_t *tokens, int T, float *logits_all, int need_logits) {
    const nano_model *m = ctx->model;
    const nano_config *c = &m->cfg;
    int dim = c->dim, pos0 = ctx->n_past, rc;
    float es = c->embed_scale ? (float)sqrt((double)dim) : 1.0f;
    for (int t = 0; t < T; t++) {
        float *x = ctx->x + (size_t)t * dim;
        embed_row(m, tokens[t], x);
        if (es != 1.0f)
            for (int i = 0; i < dim; i++) x[i] *= es;
    }
    rope_table(ctx->rope, T, pos0, c->head_dim, c->rope_theta);
    if (c->sliding_window)
        rope_table(ctx->rope + (size_t)T * c->head_dim, T, pos0, c->head_dim, c->rope_theta_local);
    for (int l = 0; l < c->n_layers; l++)
        if ((rc = layer_forward(ctx, l, T, pos0))) return rc;
    if (!logits_all && !need_logits) {
        for (int t = 0; t < T; t++) ctx->tokens[pos0 + t] = tokens[t];
        ctx->n_past += T;
        ctx->have_logits = 0;
        return NANO_OK;
    }
    /* head: every row into logits_all, or only the last row into ctx->logits */
    int r0 = logits_all ? 0 : T - 1, nr = T - r0;
    for (int t = r0; t < T; t++)
        rmsnorm(ctx->xb + (size_t)(t - r0) * dim, ctx->x + (size_t)t * dim, m->final_norm, dim,
                c->norm_eps);
    float *dst = logits_all ? logits_all : ctx->logits;
    if ((rc = nano_linear_matmul(ctx, &m->head, ctx->xb, dst, nr, 0))) return rc;
    if (logits_all)
        memcpy(ctx->logits, logits_all + (size_t)(T - 1) * c->vocab_size,
               (size_t)c->vocab_size * sizeof(float));
    for (int t = 0; t < T; t++) ctx->tokens[pos0 + t] = tokens[t];
    ctx->n_past += T;
    ctx->have_logits = 1;
    return NANO_OK;
}
