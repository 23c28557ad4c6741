/* nano.h - the public C API of the nano engine (runs a .nano model file).
 *
 * Shape of the API (after llama.h): opaque handles, *_default_params(),
 * load/free pairs, integer status codes with nano_status_message(), a version.
 * Nothing here calls exit() or abort(); a corrupt or hostile file is a status.
 *
 *   nano_model   : the mmapped .nano file (weights zero-copy, read-only).
 *                  Immutable after load: any number of contexts may share it.
 *   nano_context : one conversation: KV cache, scratch (all allocated once at
 *                  creation), thread pool, token history, last logits.
 *
 * Tokens are int32 ids. Text (tokenizer) calls will be added next to these
 * (nano_tokenize / nano_detokenize) without changing anything below.
 *
 * Thread-safety, per function, is stated on each declaration:
 *   [any]     callable from any thread at any time (on a valid handle)
 *   [model]   concurrent calls on the same model are safe
 *   [ctx]     one thread at a time per context (different contexts: parallel)
 */
#ifndef NANO_H
#define NANO_H

#include <stddef.h>
#include <stdint.h>

#include "nano_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes (0 = ok, > 0 = error) ----------------------------------- */
enum {
    NANO_OK = 0,
    NANO_ERR_INVALID_ARG = 1, /* a parameter out of range / NULL handle       */
    NANO_ERR_IO = 2,          /* file missing, unreadable, mmap failed        */
    NANO_ERR_FORMAT = 3,      /* not a valid .nano file (truncated, corrupt)  */
    NANO_ERR_UNSUPPORTED = 4, /* valid file, feature this engine lacks        */
    NANO_ERR_NO_MEMORY = 5,   /* allocation failed                            */
    NANO_ERR_BUDGET = 6,      /* model + minimum KV cache exceed the budget   */
    NANO_ERR_CONTEXT_FULL = 7,/* tokens do not fit the remaining context      */
    NANO_ERR_CANCELLED = 8,   /* nano_context_cancel() was called             */
    NANO_ERR_KERNEL = 9,      /* a kernel rejected its arguments (a bug)      */
    NANO_ERR_STATE = 10       /* call not valid in the current state          */
};

/* Static description of a status code. [any] */
NANO_API const char *nano_status_message(int status);
/* Detailed message of the last error in the calling thread (e.g. which tensor
 * of which file is bad); "" when none. Valid until the thread's next call. [any] */
NANO_API const char *nano_last_error(void);
/* "MAJOR.MINOR.PATCH" of the library (nano_version() is in nano_version.h). [any] */
NANO_API int nano_api_version(void); /* MAJOR*10000 + MINOR*100 + PATCH */

/* ---- model ---------------------------------------------------------------- */
typedef struct nano_model nano_model;

typedef struct {
    int prefault;       /* 1: touch every weight page at load (MAP_POPULATE)  */
    int no_mmap;        /* 1: read the file into anonymous memory advised for  */
                        /*    transparent huge pages instead of mapping it     */
} nano_model_params;

NANO_API nano_model_params nano_model_default_params(void); /* [any] */

/* Open and validate a .nano file. On success *out owns the mapping. [any] */
NANO_API int nano_model_load(const char *path, const nano_model_params *params,
                             nano_model **out);
/* Unmap and free. NULL is a no-op. Free every context of the model first. [model-owner] */
NANO_API void nano_model_free(nano_model *model);

enum { NANO_FAMILY_LLAMA = 0, NANO_FAMILY_GEMMA3 = 1 };

typedef struct {
    int family;            /* NANO_FAMILY_*                                */
    int vocab_size, dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim;
    int max_seq_len;       /* the model's trained context                  */
    int sliding_window;    /* 0 = none                                     */
    int n_global_layers;   /* layers with full attention                   */
    int64_t file_bytes;    /* size of the mapped file                      */
    int64_t n_params;      /* parameters (tied head counted once)          */
} nano_model_info;

NANO_API int nano_model_get_info(const nano_model *model, nano_model_info *info); /* [model] */
/* A "__metadata__" string of the file (e.g. "nano.tokenizer_config"); NULL if absent.
 * The returned string lives as long as the model. [model] */
NANO_API const char *nano_model_meta(const nano_model *model, const char *key);
/* Raw bytes of a tensor (e.g. "tokenizer.json"); NANO_ERR_INVALID_ARG if absent. [model] */
NANO_API int nano_model_tensor(const nano_model *model, const char *name, const void **data,
                               size_t *nbytes);

/* ---- memory planning -------------------------------------------------------- */
enum { NANO_PROFILE_NONE = 0, NANO_PROFILE_LOW = 1, NANO_PROFILE_HIGH = 2 };
#define NANO_PROFILE_LOW_BYTES (1536LL << 20)  /* 4 GB-class phone */
#define NANO_PROFILE_HIGH_BYTES (3584LL << 20) /* 8 GB-class phone */

enum { NANO_KV_AUTO = 0, NANO_KV_F16 = 1, NANO_KV_I8 = 2 };

typedef struct {
    int n_ctx;                   /* 0 = model max_seq_len (planner may lower it)  */
    int n_threads;               /* 0 = one per online CPU; 1..256                */
    int n_batch;                 /* prefill tokens per forward, 1..512 (default 64) */
    int kv_type;                 /* NANO_KV_*; AUTO lets the planner choose       */
    int profile;                 /* NANO_PROFILE_*; sets memory_budget if it is 0 */
    int64_t memory_budget;       /* bytes, 0 = none (profile default if set)      */
    int precise;                 /* 1: fp32 activations into the matmuls (slower,
                                    closest to the reference); 0: int8 activations */
} nano_context_params;

NANO_API nano_context_params nano_context_default_params(void); /* [any] */

typedef struct {
    int n_ctx, kv_type;
    int64_t weights_bytes, kv_bytes, scratch_bytes, total_bytes, budget_bytes;
} nano_plan;

/* What nano_context_create would allocate with these params, without allocating.
 * NANO_ERR_BUDGET (plan filled with the minimum need) when it cannot fit. [model] */
NANO_API int nano_plan_memory(const nano_model *model, const nano_context_params *params,
                              nano_plan *plan);

/* ---- context -------------------------------------------------------------- */
typedef struct nano_context nano_context;

/* Allocate KV cache + scratch + thread pool for one conversation. [model] */
NANO_API int nano_context_create(nano_model *model, const nano_context_params *params,
                                 nano_context **out);
NANO_API void nano_context_free(nano_context *ctx);     /* NULL is a no-op. [ctx] */
NANO_API int nano_context_get_plan(const nano_context *ctx, nano_plan *plan); /* [ctx] */
/* Forget every token (the KV cache is logically cleared). [ctx] */
NANO_API int nano_context_reset(nano_context *ctx);
/* Keep only the first n tokens. NANO_ERR_STATE when a sliding-window ring
 * buffer has already overwritten what would be needed (reset and re-eval). [ctx] */
NANO_API int nano_context_truncate(nano_context *ctx, int n);
/* Tokens in the KV cache; *tokens (if non-NULL) points at them. [ctx] */
NANO_API int nano_context_n_past(const nano_context *ctx, const int32_t **tokens);
/* Ask a running nano_eval/nano_generate on ctx to stop soon (it returns
 * NANO_ERR_CANCELLED / stop reason CANCELLED). The flag is cleared when the
 * next nano_eval/nano_generate starts. [any] (atomic) */
NANO_API void nano_context_cancel(nano_context *ctx);

/* Append n tokens (positions n_past..n_past+n-1), run them in batches.
 * logits_all: NULL, or [n, vocab] floats receiving every position's logits.
 * The last position's logits are always kept (nano_context_logits). [ctx] */
NANO_API int nano_eval(nano_context *ctx, const int32_t *tokens, int n, float *logits_all);
/* [vocab] logits of the last evaluated position, NULL before any eval. [ctx] */
NANO_API const float *nano_context_logits(const nano_context *ctx);

/* ---- sampling ------------------------------------------------------------- */
typedef struct {
    float temperature;        /* 0 = greedy; >= 0                               */
    int top_k;                /* 0 = off                                        */
    float top_p;              /* (0, 1]                                         */
    float min_p;              /* [0, 1)                                         */
    float repetition_penalty; /* > 0; 1 = off (applied to every seen token)      */
    uint64_t seed;            /* same seed + same inputs -> same tokens         */
} nano_sampler_params;

NANO_API nano_sampler_params nano_sampler_default_params(void); /* [any] */
NANO_API int nano_sampler_check(const nano_sampler_params *p);  /* [any] */

/* ---- generation ----------------------------------------------------------- */
enum {
    NANO_STOP_NONE = 0,
    NANO_STOP_LENGTH = 1,    /* max_tokens generated                      */
    NANO_STOP_TOKEN = 2,     /* a stop id was sampled (not emitted)       */
    NANO_STOP_CONTEXT = 3,   /* the context is full                       */
    NANO_STOP_CANCELLED = 4, /* nano_context_cancel()                     */
    NANO_STOP_CALLBACK = 5,  /* the token callback returned non-zero      */
    NANO_STOP_STRING = 6     /* a stop string appeared in the output text */
};
/* Limits of nano_generate_params / nano_text_params stop strings. */
#define NANO_MAX_STOP_STRINGS 16
#define NANO_MAX_STOP_STRING_BYTES 256
NANO_API const char *nano_stop_reason_name(int reason); /* [any] */

/* Called once per generated token, in the generating thread; return non-zero to stop. */
typedef int (*nano_token_fn)(void *user, int32_t token);

typedef struct {
    int max_tokens;              /* >= 1 */
    nano_sampler_params sampler;
    const int32_t *stop_ids;     /* [n_stop_ids] */
    int n_stop_ids;
    nano_token_fn on_token;      /* NULL = no streaming */
    void *user;
    /* ---- added after 0.1 (new fields stay at the end: the ABI is additive) ---- */
    /* Stop strings: generation ends (NANO_STOP_STRING) as soon as the bytes of the
     * generated tokens (nano_token_piece of `tokenizer`) contain one of them. The
     * token completing the match is the last one in out_tokens / on_token; the text
     * to show ends where the first occurrence begins (nano_text_generate cuts it and
     * holds back streamed text that could be the start of a stop string). Each is
     * non-empty valid UTF-8 of at most NANO_MAX_STOP_STRING_BYTES bytes. */
    const struct nano_tokenizer *tokenizer; /* needed when n_stop_strings > 0      */
    const char *const *stop_strings;        /* [n_stop_strings]                    */
    int n_stop_strings;                     /* 0..NANO_MAX_STOP_STRINGS            */
    /* Sliding context (opt-in): when the context is full while generating, keep
     * the first n_keep tokens (BOS / system prompt), drop the oldest half of the
     * rest, re-evaluate what is kept (exact: the cache then equals a fresh eval of
     * those tokens) and continue. 0: stop with NANO_STOP_CONTEXT instead. */
    int context_shift;
    int n_keep;                             /* 0 <= n_keep <= n_ctx - 2            */
} nano_generate_params;

NANO_API nano_generate_params nano_generate_default_params(void); /* [any] */

typedef struct {
    int n_prompt, n_generated, stop_reason;
    double prefill_s, decode_s;     /* wall time of prompt eval / of the rest */
    double prefill_tok_s, decode_tok_s;
} nano_generate_result;

/* Append the prompt (may be empty if the context already holds tokens and
 * logits), then sample up to max_tokens. Every generated token but the last is in
 * the context afterwards; the last one too only when stop_reason is NANO_STOP_TOKEN
 * (the stop id itself is never evaluated). out_tokens [out_cap] receives the
 * generated ids (out_cap >= max_tokens, or NULL). A prompt that does not fit
 * the remaining context returns NANO_ERR_CONTEXT_FULL before evaluating
 * anything; running out of context while generating ends with
 * NANO_STOP_CONTEXT (or shifts the context, see context_shift). [ctx] */
NANO_API int nano_generate(nano_context *ctx, const int32_t *prompt, int n_prompt,
                           const nano_generate_params *params, int32_t *out_tokens, int out_cap,
                           nano_generate_result *result);

/* ---- statistics ----------------------------------------------------------- */
typedef struct {
    int64_t prefill_tokens, decode_tokens;
    double prefill_s, decode_s;
    int64_t kv_bytes, scratch_bytes, weights_bytes;
    int64_t peak_rss_bytes;   /* of the process (getrusage), 0 if unknown */
    int n_threads, n_ctx, n_past, kv_type;
    const char *kernel;       /* kernel variant name */
} nano_stats;

NANO_API int nano_context_get_stats(const nano_context *ctx, nano_stats *stats); /* [ctx] */

#ifdef __cplusplus
}
#endif

/* The text layer (native tokenizer, chat sessions) builds on this API. */
#if defined(__has_include)
#if __has_include("nano_text.h")
#include "nano_text.h"
#endif
#endif

#endif /* NANO_H */
