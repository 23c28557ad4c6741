/* sampler.c - next-token sampling, in the order of nano_runtime/generate.py:
 *   repetition penalty (every token in the context) -> greedy if temperature 0
 *   -> / temperature -> top-k -> softmax -> min-p -> top-p -> draw.
 * The random stream is xorshift64* seeded from params.seed and advanced once
 * per draw, so the same seed and inputs give the same tokens.
 * Scratch (probs, idx, seen) is the context's, allocated once.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

NANO_API nano_sampler_params nano_sampler_default_params(void) {
    nano_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repetition_penalty = 1.0f;
    p.seed = 0;
    return p;
}

NANO_API int nano_sampler_check(const nano_sampler_params *p) {
    if (!p) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL sampler params");
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return nano_set_error(NANO_ERR_INVALID_ARG, "temperature must be >= 0, got %g", p->temperature);
    if (p->top_k < 0)
        return nano_set_error(NANO_ERR_INVALID_ARG, "top_k must be >= 0, got %d", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return nano_set_error(NANO_ERR_INVALID_ARG, "top_p must be in (0, 1], got %g", p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1))
        return nano_set_error(NANO_ERR_INVALID_ARG, "min_p must be in [0, 1), got %g", p->min_p);
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
        return nano_set_error(NANO_ERR_INVALID_ARG, "repetition_penalty must be > 0, got %g",
                              p->repetition_penalty);
    return NANO_OK;
}

static uint64_t next_u64(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static float uniform01(uint64_t *s) { return (float)((next_u64(s) >> 40) * (1.0 / 16777216.0)); }

/* min-heap on probs[idx[]] of size k: the k largest values. */
static void sift_down(const float *v, int32_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, s = i;
        if (l < n && v[h[l]] < v[h[s]]) s = l;
        if (r < n && v[h[r]] < v[h[s]]) s = r;
        if (s == i) return;
        int32_t t = h[i]; h[i] = h[s]; h[s] = t;
        i = s;
    }
}

/* Put the indices of the k largest v[] into idx[0..k), sorted descending. */
static void top_k_sorted(const float *v, int n, int k, int32_t *idx) {
    for (int i = 0; i < k; i++) idx[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(v, idx, k, i);
    for (int i = k; i < n; i++)
        if (v[i] > v[idx[0]]) {
            idx[0] = i;
            sift_down(v, idx, k, 0);
        }
    /* heap sort ascending-min-heap -> descending order */
    for (int end = k - 1; end > 0; end--) {
        int32_t t = idx[0]; idx[0] = idx[end]; idx[end] = t;
        sift_down(v, idx, end, 0);
    }
}

static __thread const float *SORT_V;
static int cmp_desc(const void *a, const void *b) {
    float x = SORT_V[*(const int32_t *)a], y = SORT_V[*(const int32_t *)b];
    return (x < y) - (x > y);
}

int32_t nano_sample(nano_context *ctx, const float *logits, const nano_sampler_params *p) {
    int V = ctx->model->cfg.vocab_size;
    float *pr = ctx->probs;
    memcpy(pr, logits, (size_t)V * sizeof *pr);
    if (p->repetition_penalty != 1.0f) {
        for (int i = 0; i < ctx->n_past; i++) {
            int32_t t = ctx->tokens[i];
            if (t < 0 || t >= V || ctx->seen[t]) continue;
            ctx->seen[t] = 1;
            pr[t] = pr[t] > 0 ? pr[t] / p->repetition_penalty : pr[t] * p->repetition_penalty;
        }
        for (int i = 0; i < ctx->n_past; i++)
            if (ctx->tokens[i] >= 0 && ctx->tokens[i] < V) ctx->seen[ctx->tokens[i]] = 0;
    }
    if (p->temperature == 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (pr[i] > pr[best]) best = i;
        return best;
    }
    /* candidates: the top-k (sorted) or every token */
    int n = V, sorted = 0;
    int32_t *idx = ctx->idx;
    float inv_t = 1.0f / p->temperature;
    for (int i = 0; i < V; i++) pr[i] *= inv_t;
    if (p->top_k > 0 && p->top_k < V) {
        top_k_sorted(pr, V, p->top_k, idx);
        n = p->top_k;
        sorted = 1;
    } else {
        for (int i = 0; i < V; i++) idx[i] = i;
    }
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = fmaxf(mx, pr[idx[i]]);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float e = expf(pr[idx[i]] - mx);
        pr[idx[i]] = e;
        sum += e;
    }
    /* min-p: drop probabilities below min_p * max (max prob is exp(0)/sum) */
    if (p->min_p > 0) {
        float thr = p->min_p; /* relative to the max, whose unnormalised value is 1 */
        int w = 0;
        sum = 0;
        for (int i = 0; i < n; i++)
            if (pr[idx[i]] >= thr) { idx[w++] = idx[i]; sum += pr[idx[i]]; }
        n = w;
    }
    if (p->top_p < 1.0f) {
        if (!sorted) {
            /* the nucleus is almost always small: try the top 1024 first */
            int k = n < 1024 ? n : 1024;
            SORT_V = pr;
            if (k < n) {
                int32_t *tmp = ctx->idx; /* idx holds the candidates; select from them */
                /* compact candidate values into a top-k over the candidate list */
                float best_mass = 0;
                static __thread int32_t top[1024];
                /* heap over candidate positions */
                for (int i = 0; i < k; i++) top[i] = tmp[i];
                for (int i = k / 2 - 1; i >= 0; i--) sift_down(pr, top, k, i);
                for (int i = k; i < n; i++)
                    if (pr[tmp[i]] > pr[top[0]]) { top[0] = tmp[i]; sift_down(pr, top, k, 0); }
                for (int i = 0; i < k; i++) best_mass += pr[top[i]];
                if (best_mass >= p->top_p * sum) {
                    memcpy(idx, top, (size_t)k * sizeof *idx);
                    n = k;
                }
            }
            qsort(idx, (size_t)n, sizeof *idx, cmp_desc);
        }
        double cum = 0, keep_sum = 0;
        int w = 0;
        for (int i = 0; i < n; i++) {
            double q = pr[idx[i]] / sum;
            if (cum > p->top_p) break; /* keep the smallest prefix reaching top_p */
            cum += q;
            keep_sum += pr[idx[i]];
            w++;
        }
        n = w;
        sum = keep_sum;
    }
    if (n <= 0) return idx[0];
    double r = uniform01(&ctx->rng) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += pr[idx[i]];
        if (r < acc) return idx[i];
    }
    return idx[n - 1];
}
