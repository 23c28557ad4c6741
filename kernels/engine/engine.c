/* engine.c - the public API around the model and the forward pass: status
 * messages, the memory planner, context lifetime, nano_eval, nano_generate
 * (sampling loop with stop ids, stop strings, max tokens, context limit or
 * opt-in context shift, cancellation and a streaming callback) and statistics.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "engine_internal.h"

/* ---- errors --------------------------------------------------------------- */
static _Thread_local char LAST_ERROR[768];

int nano_set_error(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(LAST_ERROR, sizeof LAST_ERROR, fmt, ap);
    va_end(ap);
    return status;
}

NANO_API const char *nano_last_error(void) { return LAST_ERROR; }

NANO_API int nano_api_version(void) {
    return NANO_VERSION_MAJOR * 10000 + NANO_VERSION_MINOR * 100 + NANO_VERSION_PATCH;
}

NANO_API const char *nano_status_message(int s) {
    switch (s) {
    case NANO_OK: return "ok";
    case NANO_ERR_INVALID_ARG: return "invalid argument";
    case NANO_ERR_IO: return "cannot read the file";
    case NANO_ERR_FORMAT: return "not a valid .nano file";
    case NANO_ERR_UNSUPPORTED: return "unsupported by this engine";
    case NANO_ERR_NO_MEMORY: return "out of memory";
    case NANO_ERR_BUDGET: return "the model does not fit the memory budget";
    case NANO_ERR_CONTEXT_FULL: return "the tokens do not fit the context";
    case NANO_ERR_CANCELLED: return "cancelled";
    case NANO_ERR_KERNEL: return "kernel error";
    case NANO_ERR_STATE: return "invalid state for this call";
    default: return "unknown status";
    }
}

NANO_API const char *nano_stop_reason_name(int r) {
    switch (r) {
    case NANO_STOP_NONE: return "none";
    case NANO_STOP_LENGTH: return "length";
    case NANO_STOP_TOKEN: return "stop";
    case NANO_STOP_CONTEXT: return "context";
    case NANO_STOP_CANCELLED: return "cancelled";
    case NANO_STOP_CALLBACK: return "callback";
    case NANO_STOP_STRING: return "stop_string";
    default: return "unknown";
    }
}

double nano_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- planning --------------------------------------------------------------- */
#define OVERHEAD_BYTES (24LL << 20) /* runtime, thread stacks, allocator slack */
#define MIN_CTX 256

static int layer_cap(const nano_config *c, int l, int n_ctx, int n_batch) {
    if (nano_layer_is_global(c, l)) return n_ctx;
    int ring = c->sliding_window + n_batch;
    return ring < n_ctx ? ring : n_ctx;
}

int64_t nano_kv_bytes(const nano_config *c, int n_ctx, int n_batch, int kv_type) {
    int64_t per_slot = (int64_t)c->n_kv_heads *
                       (kv_type == NANO_KV_I8 ? (c->head_dim + 4) : 2 * c->head_dim);
    int64_t total = 0;
    for (int l = 0; l < c->n_layers; l++) total += 2 * per_slot * layer_cap(c, l, n_ctx, n_batch);
    return total;
}

int64_t nano_scratch_bytes(const nano_config *c, int n_ctx, int n_batch, int n_threads) {
    int64_t B = n_batch, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t kmax = c->dim > qd ? c->dim : qd;
    if (c->hidden_dim > kmax) kmax = c->hidden_dim;
    int64_t f = B * (4 * (int64_t)c->dim + 2 * qd + 2 * kvd + 2 * (int64_t)c->hidden_dim) +
                2 * B * c->head_dim + (int64_t)n_threads * n_ctx * (c->n_heads / c->n_kv_heads) +
                2LL * c->vocab_size +
                (int64_t)n_threads * (int64_t)nano_attn_scratch_floats(c->head_dim, c->n_heads);
    int64_t act = (int64_t)nano_q8_act_bytes((int)B, (int)kmax);
    return f * 4 + act + 5LL * c->vocab_size + 4LL * n_ctx;
}

static int resolve_threads(int n) {
    if (n > 0) return n;
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

static int check_params(const nano_model *m, const nano_context_params *p) {
    if (p->n_ctx < 0 || p->n_ctx > (1 << 22))
        return nano_set_error(NANO_ERR_INVALID_ARG, "n_ctx must be in [0, %d], got %d", 1 << 22, p->n_ctx);
    if (p->n_threads < 0 || p->n_threads > 256)
        return nano_set_error(NANO_ERR_INVALID_ARG, "n_threads must be in [0, 256] (0 = all cores), got %d",
                              p->n_threads);
    if (p->n_batch < 1 || p->n_batch > 512)
        return nano_set_error(NANO_ERR_INVALID_ARG, "n_batch must be in [1, 512], got %d", p->n_batch);
    if (p->kv_type < NANO_KV_AUTO || p->kv_type > NANO_KV_I8)
        return nano_set_error(NANO_ERR_INVALID_ARG, "kv_type must be 0 (auto), 1 (f16) or 2 (i8), got %d",
                              p->kv_type);
    if (p->profile < NANO_PROFILE_NONE || p->profile > NANO_PROFILE_HIGH)
        return nano_set_error(NANO_ERR_INVALID_ARG, "profile must be 0 (none), 1 (low) or 2 (high), got %d",
                              p->profile);
    if (p->memory_budget < 0)
        return nano_set_error(NANO_ERR_INVALID_ARG, "memory_budget must be >= 0");
    (void)m;
    return NANO_OK;
}

static void fill_plan(const nano_model *m, int n_ctx, int kv, int n_batch, int nth, int64_t budget,
                      nano_plan *pl) {
    pl->n_ctx = n_ctx;
    pl->kv_type = kv;
    pl->weights_bytes = (int64_t)m->map_bytes;
    pl->kv_bytes = nano_kv_bytes(&m->cfg, n_ctx, n_batch, kv);
    pl->scratch_bytes = nano_scratch_bytes(&m->cfg, n_ctx, n_batch, nth);
    pl->total_bytes = pl->weights_bytes + pl->kv_bytes + pl->scratch_bytes + OVERHEAD_BYTES;
    pl->budget_bytes = budget;
}

NANO_API int nano_plan_memory(const nano_model *m, const nano_context_params *p, nano_plan *pl) {
    if (!m || !p || !pl) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL argument");
    int rc = check_params(m, p);
    if (rc) return rc;
    int64_t budget = p->memory_budget;
    if (!budget && p->profile == NANO_PROFILE_LOW) budget = NANO_PROFILE_LOW_BYTES;
    if (!budget && p->profile == NANO_PROFILE_HIGH) budget = NANO_PROFILE_HIGH_BYTES;
    int nth = resolve_threads(p->n_threads);
    int ctx = p->n_ctx ? p->n_ctx : m->cfg.max_seq_len;
    int batch = p->n_batch;
    if (!budget) {
        fill_plan(m, ctx, p->kv_type ? p->kv_type : NANO_KV_F16, batch, nth, 0, pl);
        return NANO_OK;
    }
    /* try: the asked context in fp16, then int8 KV, then halve the context (int8) */
    int kvs[2] = {NANO_KV_F16, NANO_KV_I8}, nk = 2, k0 = 0;
    if (p->kv_type) { kvs[0] = p->kv_type; nk = 1; }
    int min_ctx = ctx < MIN_CTX ? ctx : MIN_CTX;
    for (int c = ctx;;) {
        for (int i = k0; i < nk; i++) {
            fill_plan(m, c, kvs[i], batch, nth, budget, pl);
            if (pl->total_bytes <= budget) return NANO_OK;
        }
        if (nk == 2) k0 = 1; /* once shrinking the context, int8 KV only */
        if (c == min_ctx) break;
        c = c / 2 > min_ctx ? c / 2 : min_ctx;
    }
    fill_plan(m, min_ctx, kvs[nk - 1], batch, nth, budget, pl);
    return nano_set_error(NANO_ERR_BUDGET,
                          "the model needs %lld MB (weights %lld MB + KV cache %lld MB at %d tokens + "
                          "scratch %lld MB + %lld MB runtime), budget %lld MB",
                          (long long)(pl->total_bytes >> 20), (long long)(pl->weights_bytes >> 20),
                          (long long)(pl->kv_bytes >> 20), min_ctx, (long long)(pl->scratch_bytes >> 20),
                          (long long)(OVERHEAD_BYTES >> 20), (long long)(budget >> 20));
}

/* ---- context ---------------------------------------------------------------- */
NANO_API nano_context_params nano_context_default_params(void) {
    nano_context_params p;
    memset(&p, 0, sizeof p);
    p.n_batch = 64;
    return p;
}

static void *zalloc(nano_context *ctx, size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    memset(p, 0, bytes ? bytes : 64);
    ctx->scratch_bytes += (int64_t)bytes;
    return p;
}

/* The KV cache of every layer in one zeroed allocation, sliced by kv_take. Decode walks
 * each head's rows once per step, long after the weights streamed through the caches
 * evicted them and their translations; with 4 KiB pages a walk takes a TLB miss every 16
 * rows (fp16, head_dim 128). One allocation, 2 MiB-aligned and advised for transparent
 * huge pages (where the kernel offers them; nothing changes elsewhere), wastes at most
 * one partly used huge page. nano-1 at position ~400: attention 15% faster. */
#define KV_HUGE (2u << 20)
static int kv_alloc(nano_context *ctx, size_t bytes) {
    const size_t align = bytes >= KV_HUGE ? KV_HUGE : 64;
    const size_t n = (bytes + align - 1) / align * align;
    if (posix_memalign(&ctx->kv_arena, align, n ? n : 64)) {
        ctx->kv_arena = NULL;
        return -1;
    }
#ifdef MADV_HUGEPAGE
    if (align == KV_HUGE) madvise(ctx->kv_arena, n, MADV_HUGEPAGE);
#endif
    memset(ctx->kv_arena, 0, n ? n : 64);
    ctx->kv_bytes = (int64_t)bytes;
    return 0;
}

/* the next `bytes` of the arena (64-byte aligned slices) */
static void *kv_take(char **cur, size_t bytes) {
    void *p = *cur;
    *cur += (bytes + 63) / 64 * 64;
    return p;
}

NANO_API void nano_context_free(nano_context *ctx) {
    if (!ctx) return;
    free(ctx->kv_arena);
    free(ctx->k16); free(ctx->v16); free(ctx->k8); free(ctx->v8); free(ctx->ks); free(ctx->vs);
    free(ctx->cap);
    free(ctx->x); free(ctx->xb); free(ctx->q); free(ctx->k); free(ctx->v); free(ctx->att);
    free(ctx->hb); free(ctx->hb2); free(ctx->h); free(ctx->rope); free(ctx->scores); free(ctx->attn_scratch);
    free(ctx->actbuf); free(ctx->logits); free(ctx->probs); free(ctx->idx); free(ctx->seen);
    free(ctx->tokens);
    nano_pool_free(ctx->pool);
    free(ctx);
}

NANO_API int nano_context_create(nano_model *m, const nano_context_params *params, nano_context **out) {
    if (out) *out = NULL;
    if (!m || !out) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL model or out pointer");
    nano_context_params p = params ? *params : nano_context_default_params();
    nano_plan plan;
    int rc = nano_plan_memory(m, &p, &plan);
    if (rc) return rc;
    const nano_config *c = &m->cfg;
    nano_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    ctx->model = m;
    ctx->params = p;
    ctx->plan = plan;
    ctx->n_ctx = plan.n_ctx;
    ctx->kv_type = plan.kv_type;
    ctx->n_batch = p.n_batch < ctx->n_ctx ? p.n_batch : ctx->n_ctx;
    ctx->n_threads = resolve_threads(p.n_threads);
    atomic_init(&ctx->cancel, 0);
    int L = c->n_layers, hd = c->head_dim, nkv = c->n_kv_heads, B = ctx->n_batch;
    size_t qd = (size_t)c->n_heads * hd, kvd = (size_t)nkv * hd, dim = c->dim, hid = c->hidden_dim;
    size_t kmax = dim > qd ? dim : qd;
    if (hid > kmax) kmax = hid;
    ctx->cap = calloc((size_t)L, sizeof *ctx->cap);
    int f16 = ctx->kv_type == NANO_KV_F16;
    if (f16) {
        ctx->k16 = calloc((size_t)L, sizeof *ctx->k16);
        ctx->v16 = calloc((size_t)L, sizeof *ctx->v16);
    } else {
        ctx->k8 = calloc((size_t)L, sizeof *ctx->k8);
        ctx->v8 = calloc((size_t)L, sizeof *ctx->v8);
        ctx->ks = calloc((size_t)L, sizeof *ctx->ks);
        ctx->vs = calloc((size_t)L, sizeof *ctx->vs);
    }
    if (!ctx->cap || (f16 && (!ctx->k16 || !ctx->v16)) ||
        (!f16 && (!ctx->k8 || !ctx->v8 || !ctx->ks || !ctx->vs)))
        goto oom;
    size_t kv_total = 0; /* per layer: K and V rows (and int8 row scales), 64-byte slices */
    for (int l = 0; l < L; l++) {
        ctx->cap[l] = layer_cap(c, l, ctx->n_ctx, B);
        const size_t slots = (size_t)nkv * ctx->cap[l];
        kv_total += f16 ? 2 * ((slots * hd * 2 + 63) / 64 * 64)
                        : 2 * ((slots * hd + 63) / 64 * 64) + 2 * ((slots * 4 + 63) / 64 * 64);
    }
    if (kv_alloc(ctx, kv_total)) goto oom;
    char *cur = ctx->kv_arena;
    for (int l = 0; l < L; l++) {
        const size_t slots = (size_t)nkv * ctx->cap[l];
        if (f16) {
            ctx->k16[l] = kv_take(&cur, slots * hd * 2);
            ctx->v16[l] = kv_take(&cur, slots * hd * 2);
        } else {
            ctx->k8[l] = kv_take(&cur, slots * hd);
            ctx->v8[l] = kv_take(&cur, slots * hd);
            ctx->ks[l] = kv_take(&cur, slots * 4);
            ctx->vs[l] = kv_take(&cur, slots * 4);
        }
    }
    size_t F = sizeof(float);
    ctx->actbuf_bytes = nano_q8_act_bytes(B, (int)kmax);
    if (!(ctx->x = zalloc(ctx, B * dim * F)) || !(ctx->xb = zalloc(ctx, B * dim * F)) ||
        !(ctx->h = zalloc(ctx, B * dim * F)) || !(ctx->q = zalloc(ctx, B * qd * F)) ||
        !(ctx->att = zalloc(ctx, B * qd * F)) || !(ctx->k = zalloc(ctx, B * kvd * F)) ||
        !(ctx->v = zalloc(ctx, B * kvd * F)) || !(ctx->hb = zalloc(ctx, B * hid * F)) ||
        !(ctx->hb2 = zalloc(ctx, B * hid * F)) || !(ctx->rope = zalloc(ctx, 2 * (size_t)B * hd * F)) ||
        !(ctx->scores = zalloc(ctx, (size_t)ctx->n_threads * ctx->n_ctx * (c->n_heads / c->n_kv_heads) * F)) ||
        !(ctx->attn_scratch = zalloc(ctx, (size_t)ctx->n_threads *
                                     (ctx->attn_scratch_floats = nano_attn_scratch_floats(hd, c->n_heads)) * F)) ||
        !(ctx->actbuf = zalloc(ctx, ctx->actbuf_bytes)) ||
        !(ctx->logits = zalloc(ctx, (size_t)c->vocab_size * F)) ||
        !(ctx->probs = zalloc(ctx, (size_t)c->vocab_size * F)) ||
        !(ctx->idx = zalloc(ctx, (size_t)c->vocab_size * 4)) ||
        !(ctx->seen = zalloc(ctx, (size_t)c->vocab_size)) ||
        !(ctx->tokens = zalloc(ctx, (size_t)ctx->n_ctx * 4)))
        goto oom;
    if (nano_q8_act_init(&ctx->act, ctx->actbuf, ctx->actbuf_bytes, B, (int)kmax)) {
        nano_context_free(ctx);
        return nano_set_error(NANO_ERR_KERNEL, "cannot set up the activation buffer");
    }
    ctx->pool = nano_pool_create(ctx->n_threads);
    if (!ctx->pool) {
        nano_context_free(ctx);
        return nano_set_error(NANO_ERR_NO_MEMORY, "cannot start %d threads", ctx->n_threads);
    }
    *out = ctx;
    return NANO_OK;
oom:
    nano_context_free(ctx);
    return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory allocating the KV cache and scratch "
                          "(plan: %lld MB)", (long long)(plan.total_bytes >> 20));
}

NANO_API int nano_context_get_plan(const nano_context *ctx, nano_plan *plan) {
    if (!ctx || !plan) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL argument");
    *plan = ctx->plan;
    return NANO_OK;
}

NANO_API int nano_context_reset(nano_context *ctx) {
    if (!ctx) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL context");
    ctx->n_past = 0;
    ctx->have_logits = 0;
    return NANO_OK;
}

NANO_API int nano_context_truncate(nano_context *ctx, int n) {
    if (!ctx) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL context");
    if (n < 0 || n > ctx->n_past)
        return nano_set_error(NANO_ERR_INVALID_ARG, "cannot truncate to %d tokens (context holds %d)", n,
                              ctx->n_past);
    if (n == ctx->n_past) return NANO_OK;
    /* ring layers: positions n-window..n-1 must not have been overwritten by n..n_past-1 */
    const nano_config *c = &ctx->model->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        int w = ctx->model->layers[l].window;
        if (w && ctx->cap[l] < ctx->n_ctx && ctx->n_past - n > ctx->cap[l] - w)
            return nano_set_error(NANO_ERR_STATE, "sliding-window cache already overwritten; reset and "
                                  "re-evaluate");
    }
    ctx->n_past = n;
    ctx->have_logits = 0;
    return NANO_OK;
}

NANO_API int nano_context_n_past(const nano_context *ctx, const int32_t **tokens) {
    if (!ctx) return 0;
    if (tokens) *tokens = ctx->tokens;
    return ctx->n_past;
}

NANO_API void nano_context_cancel(nano_context *ctx) {
    if (ctx) atomic_store(&ctx->cancel, 1);
}

NANO_API const float *nano_context_logits(const nano_context *ctx) {
    return ctx && ctx->have_logits ? ctx->logits : NULL;
}

static int eval_tokens(nano_context *ctx, const int32_t *tokens, int n, float *logits_all) {
    int V = ctx->model->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return nano_set_error(NANO_ERR_INVALID_ARG, "token id %d at position %d is outside the "
                                  "vocabulary [0, %d)", tokens[i], i, V);
    if (n > ctx->n_ctx - ctx->n_past)
        return nano_set_error(NANO_ERR_CONTEXT_FULL, "%d tokens do not fit the context: %d of %d "
                              "positions are free", n, ctx->n_ctx - ctx->n_past, ctx->n_ctx);
    for (int i = 0; i < n; i += ctx->n_batch) {
        if (atomic_load(&ctx->cancel)) return nano_set_error(NANO_ERR_CANCELLED, "cancelled");
        int T = n - i < ctx->n_batch ? n - i : ctx->n_batch;
        int rc = nano_forward(ctx, tokens + i, T,
                              logits_all ? logits_all + (size_t)i * V : NULL, i + T == n);
        if (rc) {
            ctx->have_logits = 0;
            return rc;
        }
    }
    return NANO_OK;
}

NANO_API int nano_eval(nano_context *ctx, const int32_t *tokens, int n, float *logits_all) {
    if (!ctx) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL context");
    if (n < 0 || (n > 0 && !tokens)) return nano_set_error(NANO_ERR_INVALID_ARG, "bad token array");
    atomic_store(&ctx->cancel, 0);
    double t0 = nano_now();
    int rc = eval_tokens(ctx, tokens, n, logits_all);
    if (!rc) {
        ctx->prefill_tokens += n;
        ctx->prefill_s += nano_now() - t0;
    }
    return rc;
}

/* ---- stop strings (also used by text_session.c) ------------------------------- */
static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i], lo = 0x80, hi = 0xBF;
        int len;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) len = 2;
        else if (b >= 0xE0 && b <= 0xEF) { len = 3; lo = b == 0xE0 ? 0xA0 : 0x80; hi = b == 0xED ? 0x9F : 0xBF; }
        else if (b >= 0xF0 && b <= 0xF4) { len = 4; lo = b == 0xF0 ? 0x90 : 0x80; hi = b == 0xF4 ? 0x8F : 0xBF; }
        else return 0;
        if (i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++)
            if (s[i + k] < (k == 1 ? lo : 0x80) || s[i + k] > (k == 1 ? hi : 0xBF)) return 0;
        i += (size_t)len;
    }
    return 1;
}

/* Check an array of stop strings; *maxlen (if non-NULL) = the longest, in bytes. */
int nano_stop_strings_check(const char *const *stops, int n, size_t *maxlen) {
    size_t m = 0;
    if (n < 0 || n > NANO_MAX_STOP_STRINGS)
        return nano_set_error(NANO_ERR_INVALID_ARG, "%d stop strings: between 0 and %d are allowed", n,
                              NANO_MAX_STOP_STRINGS);
    if (n > 0 && !stops) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL stop string array");
    for (int i = 0; i < n; i++) {
        if (!stops[i]) return nano_set_error(NANO_ERR_INVALID_ARG, "stop string %d is NULL", i);
        size_t len = strlen(stops[i]);
        if (len == 0) return nano_set_error(NANO_ERR_INVALID_ARG, "stop string %d is empty", i);
        if (len > NANO_MAX_STOP_STRING_BYTES)
            return nano_set_error(NANO_ERR_INVALID_ARG, "stop string %d is %zu bytes long (at most %d)", i,
                                  len, NANO_MAX_STOP_STRING_BYTES);
        if (!utf8_valid((const uint8_t *)stops[i], len))
            return nano_set_error(NANO_ERR_INVALID_ARG, "stop string %d is not valid UTF-8", i);
        if (len > m) m = len;
    }
    if (maxlen) *maxlen = m;
    return NANO_OK;
}

/* Earliest position >= from where one of the stop strings starts in s[0..n); -1 if none. */
long nano_stop_find(const char *s, size_t n, size_t from, const char *const *stops, int k) {
    long best = -1;
    for (int i = 0; i < k; i++) {
        size_t L = strlen(stops[i]);
        for (size_t p = from; p + L <= n && (best < 0 || p < (size_t)best); p++)
            if (s[p] == stops[i][0] && memcmp(s + p, stops[i], L) == 0) { best = (long)p; break; }
    }
    return best;
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of a stop string:
 * text that must be held back while streaming. */
size_t nano_stop_partial(const char *s, size_t n, const char *const *stops, int k) {
    size_t best = 0;
    for (int i = 0; i < k; i++) {
        size_t L = strlen(stops[i]);
        for (size_t m = L - 1 < n ? L - 1 : n; m > best; m--)
            if (memcmp(s + n - m, stops[i], m) == 0) { best = m; break; }
    }
    return best;
}

/* Sliding context: keep tokens [0, keep), drop the oldest half of the rest and
 * re-evaluate what is kept from position 0 (exact; not cancellable, so the cache
 * is never left half-built). 1 when nothing can be dropped. */
static int context_shift(nano_context *ctx, int n_keep) {
    int n_past = ctx->n_past, keep = n_keep < n_past ? n_keep : n_past;
    int n_discard = (n_past - keep) / 2;
    if (n_discard < 1) return 1;
    int n_new = n_past - n_discard;
    memmove(ctx->tokens + keep, ctx->tokens + keep + n_discard,
            (size_t)(n_past - keep - n_discard) * sizeof *ctx->tokens);
    ctx->n_past = 0;
    ctx->have_logits = 0;
    for (int i = 0; i < n_new; i += ctx->n_batch) {
        int T = n_new - i < ctx->n_batch ? n_new - i : ctx->n_batch;
        /* nano_forward copies its tokens to ctx->tokens[n_past..]: the same values here */
        int rc = nano_forward(ctx, ctx->tokens + i, T, NULL, i + T == n_new);
        if (rc) { ctx->n_past = 0; ctx->have_logits = 0; return -rc; }
    }
    return 0;
}

/* ---- generation ------------------------------------------------------------- */
NANO_API nano_generate_params nano_generate_default_params(void) {
    nano_generate_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 128;
    p.sampler = nano_sampler_default_params();
    return p;
}

NANO_API int nano_generate(nano_context *ctx, const int32_t *prompt, int n_prompt,
                           const nano_generate_params *gp, int32_t *out_tokens, int out_cap,
                           nano_generate_result *res) {
    nano_generate_result dummy;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    if (!ctx || !gp) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL context or params");
    if (gp->max_tokens < 1)
        return nano_set_error(NANO_ERR_INVALID_ARG, "max_tokens must be >= 1, got %d", gp->max_tokens);
    if (out_tokens && out_cap < gp->max_tokens)
        return nano_set_error(NANO_ERR_INVALID_ARG, "out_cap %d < max_tokens %d", out_cap, gp->max_tokens);
    if (n_prompt < 0 || (n_prompt > 0 && !prompt))
        return nano_set_error(NANO_ERR_INVALID_ARG, "bad prompt array");
    if (gp->n_stop_ids < 0 || (gp->n_stop_ids > 0 && !gp->stop_ids))
        return nano_set_error(NANO_ERR_INVALID_ARG, "bad stop id array");
    size_t stop_max = 0;
    int rc = nano_stop_strings_check(gp->stop_strings, gp->n_stop_strings, &stop_max);
    if (rc) return rc;
    if (gp->n_stop_strings > 0 && !gp->tokenizer)
        return nano_set_error(NANO_ERR_INVALID_ARG, "stop strings need the tokenizer (params.tokenizer)");
    if (gp->context_shift && (gp->n_keep < 0 || gp->n_keep > ctx->n_ctx - 2))
        return nano_set_error(NANO_ERR_INVALID_ARG, "n_keep must be between 0 and %d (context %d), got %d",
                              ctx->n_ctx - 2, ctx->n_ctx, gp->n_keep);
    rc = nano_sampler_check(&gp->sampler);
    if (rc) return rc;
    if (n_prompt == 0 && !ctx->have_logits)
        return nano_set_error(NANO_ERR_INVALID_ARG, "the prompt is empty");
    if (n_prompt > ctx->n_ctx - ctx->n_past)
        return nano_set_error(NANO_ERR_CONTEXT_FULL, "prompt of %d tokens does not fit the context: "
                              "%d of %d positions are free", n_prompt, ctx->n_ctx - ctx->n_past,
                              ctx->n_ctx);
    /* stop strings: the last stop_max - 1 bytes of output + the newest piece */
    char *win = NULL;
    size_t win_len = 0, win_cap = 0;
    if (gp->n_stop_strings > 0) {
        win_cap = 2 * stop_max + 64;
        if (!(win = malloc(win_cap))) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    }
    atomic_store(&ctx->cancel, 0);
    ctx->rng = gp->sampler.seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    if (!ctx->rng) ctx->rng = 1;
    res->n_prompt = n_prompt;
    double t0 = nano_now();
    if (n_prompt > 0) {
        rc = eval_tokens(ctx, prompt, n_prompt, NULL);
        if (rc == NANO_ERR_CANCELLED) {
            res->stop_reason = NANO_STOP_CANCELLED;
            free(win);
            return NANO_OK;
        }
        if (rc) { free(win); return rc; }
    }
    double t1 = nano_now();
    res->prefill_s = t1 - t0;
    ctx->prefill_tokens += n_prompt;
    ctx->prefill_s += t1 - t0;
    /* Every generated token but the last is evaluated; the last only when the loop
     * ends at a stop id (nano.h promises this; the text session relies on it). */
    int n = 0, reason = NANO_STOP_NONE;
    while (!reason) {
        if (n == 0 && atomic_load(&ctx->cancel)) { reason = NANO_STOP_CANCELLED; break; }
        int32_t tok = nano_sample(ctx, ctx->logits, &gp->sampler);
        int stop = 0;
        for (int i = 0; i < gp->n_stop_ids; i++) stop |= gp->stop_ids[i] == tok;
        if (stop) { reason = NANO_STOP_TOKEN; break; }
        if (out_tokens) out_tokens[n] = tok;
        n++;
        if (gp->on_token && gp->on_token(gp->user, tok)) { reason = NANO_STOP_CALLBACK; break; }
        if (win) {
            const char *piece;
            size_t pl;
            rc = nano_token_piece(gp->tokenizer, tok, &piece, &pl);
            if (rc) break;
            if (win_len + pl > win_cap) {
                char *w = realloc(win, win_len + pl + 64);
                if (!w) { rc = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); break; }
                win = w;
                win_cap = win_len + pl + 64;
            }
            memcpy(win + win_len, piece, pl);
            win_len += pl;
            if (nano_stop_find(win, win_len, 0, gp->stop_strings, gp->n_stop_strings) >= 0) {
                reason = NANO_STOP_STRING;
                break;
            }
            if (win_len >= stop_max) { /* keep the last stop_max - 1 bytes */
                memmove(win, win + win_len - (stop_max - 1), stop_max - 1);
                win_len = stop_max - 1;
            }
        }
        if (n >= gp->max_tokens) { reason = NANO_STOP_LENGTH; break; }
        if (atomic_load(&ctx->cancel)) { reason = NANO_STOP_CANCELLED; break; }
        if (ctx->n_past >= ctx->n_ctx) {
            if (!gp->context_shift) { reason = NANO_STOP_CONTEXT; break; }
            int sh = context_shift(ctx, gp->n_keep);
            if (sh > 0) { reason = NANO_STOP_CONTEXT; break; }
            if (sh < 0) { rc = -sh; break; }
        }
        rc = eval_tokens(ctx, &tok, 1, NULL);
        if (rc == NANO_ERR_CANCELLED) { reason = NANO_STOP_CANCELLED; rc = 0; break; }
        if (rc) break;
        ctx->decode_tokens++;
    }
    free(win);
    if (rc) return rc;
    double t2 = nano_now();
    res->n_generated = n;
    res->stop_reason = reason;
    res->decode_s = t2 - t1;
    ctx->decode_s += t2 - t1;
    res->prefill_tok_s = res->prefill_s > 0 ? n_prompt / res->prefill_s : 0;
    int n_dec = n > 1 ? n - 1 : 0;
    res->decode_tok_s = n_dec && res->decode_s > 0 ? n_dec / res->decode_s : 0;
    return NANO_OK;
}

NANO_API int nano_context_get_stats(const nano_context *ctx, nano_stats *s) {
    if (!ctx || !s) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL argument");
    memset(s, 0, sizeof *s);
    s->prefill_tokens = ctx->prefill_tokens;
    s->decode_tokens = ctx->decode_tokens;
    s->prefill_s = ctx->prefill_s;
    s->decode_s = ctx->decode_s;
    s->kv_bytes = ctx->kv_bytes;
    s->scratch_bytes = ctx->scratch_bytes;
    s->weights_bytes = (int64_t)ctx->model->map_bytes;
    /* VmHWM is per address space; getrusage's ru_maxrss survives execve */
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) s->peak_rss_bytes = kb * 1024;
        fclose(f);
    }
    struct rusage ru;
    if (!s->peak_rss_bytes && getrusage(RUSAGE_SELF, &ru) == 0)
        s->peak_rss_bytes = (int64_t)ru.ru_maxrss * 1024;
    s->n_threads = ctx->n_threads;
    s->n_ctx = ctx->n_ctx;
    s->n_past = ctx->n_past;
    s->kv_type = ctx->kv_type;
    s->kernel = nano_kernel_variant_name(nano_kernel_variant());
    return NANO_OK;
}
