/* text_session.c - the text API of nano_text.h: a model with its tokenizer, and
 * sessions that take text (plain or chat turns) and stream text back.
 *
 * Streaming goes through nano_detok_stream (public, for apps that drive
 * nano_generate themselves): token pieces are appended, only whole characters are
 * handed out, invalid bytes become U+FFFD, so every callback carries valid UTF-8
 * and no character is split across callbacks.
 *
 * The engine does not evaluate the last sampled token when generation stops
 * (length / callback / cancel); the session keeps such tokens "pending" and
 * feeds them first on the next call, so a conversation's KV cache always holds
 * exactly the text it has seen.
 *
 * Stop strings are matched here on the streamed text (whole characters, invalid
 * bytes as U+FFFD): text that could be the start of a stop string is held back;
 * on a match the text before it is streamed and generation stops. The matched
 * tokens stay in the conversation (the KV cache holds what the model produced).
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* stop-string helpers of engine.c (internal symbols) */
int nano_stop_strings_check(const char *const *stops, int n, size_t *maxlen);
long nano_stop_find(const char *s, size_t n, size_t from, const char *const *stops, int k);
size_t nano_stop_partial(const char *s, size_t n, const char *const *stops, int k);

struct nano_text_model {
    nano_model *model;
    nano_tokenizer *tok;
};

struct nano_text_session {
    nano_text_model *tm;
    nano_context *ctx;
    int in_reply;            /* a chat reply is open (close it before the next turn) */
    int32_t *pending;        /* generated but not yet evaluated tokens */
    int n_pending, cap_pending;
};

int nano_text_model_load(const char *path, const nano_model_params *params, nano_text_model **out) {
    if (!path || !out) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL path or output");
    *out = NULL;
    nano_text_model *tm = calloc(1, sizeof *tm);
    if (!tm) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    nano_model_params mp = params ? *params : nano_model_default_params();
    int st = nano_model_load(path, &mp, &tm->model);
    if (st == NANO_OK) st = nano_tokenizer_from_model(tm->model, &tm->tok);
    if (st != NANO_OK) { nano_text_model_free(tm); return st; }
    *out = tm;
    return NANO_OK;
}

void nano_text_model_free(nano_text_model *tm) {
    if (!tm) return;
    nano_tokenizer_free(tm->tok);
    nano_model_free(tm->model);
    free(tm);
}

nano_model *nano_text_model_model(const nano_text_model *tm) { return tm ? tm->model : NULL; }
const nano_tokenizer *nano_text_model_tokenizer(const nano_text_model *tm) { return tm ? tm->tok : NULL; }

nano_text_params nano_text_default_params(void) {
    nano_text_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 128;
    p.sampler = nano_sampler_default_params();
    p.sampler.temperature = 0.0f;
    return p;
}

int nano_text_session_create(nano_text_model *tm, const nano_context_params *params,
                             nano_text_session **out) {
    if (!tm || !out) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL model or output");
    *out = NULL;
    nano_text_session *s = calloc(1, sizeof *s);
    if (!s) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    nano_context_params cp = params ? *params : nano_context_default_params();
    int st = nano_context_create(tm->model, &cp, &s->ctx);
    if (st != NANO_OK) { free(s); return st; }
    s->tm = tm;
    *out = s;
    return NANO_OK;
}

void nano_text_session_free(nano_text_session *s) {
    if (!s) return;
    nano_context_free(s->ctx);
    free(s->pending);
    free(s);
}

int nano_text_session_reset(nano_text_session *s) {
    if (!s) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL session");
    s->in_reply = 0;
    s->n_pending = 0;
    return nano_context_reset(s->ctx);
}

void nano_text_session_cancel(nano_text_session *s) {
    if (s) nano_context_cancel(s->ctx);
}

int nano_text_session_get_stats(const nano_text_session *s, nano_stats *stats) {
    if (!s) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL session");
    return nano_context_get_stats(s->ctx, stats);
}

nano_context *nano_text_session_context(const nano_text_session *s) { return s ? s->ctx : NULL; }

/* ---- streaming UTF-8 (nano_detok_stream) ------------------------------------------ */
struct nano_detok_stream {
    const nano_tokenizer *tok;
    uint8_t tail[4];        /* an incomplete character carried to the next token */
    int n_tail;
    char *out;              /* the text of the last push/flush */
    size_t cap;
};

int nano_detok_stream_create(const nano_tokenizer *tok, nano_detok_stream **out) {
    if (!tok || !out) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL tokenizer or output");
    *out = calloc(1, sizeof **out);
    if (!*out) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    (*out)->tok = tok;
    return NANO_OK;
}

void nano_detok_stream_free(nano_detok_stream *ds) {
    if (!ds) return;
    free(ds->out);
    free(ds);
}

/* A UTF-8 character at s[0..n): its length when complete and valid; 0 when valid so
 * far but incomplete; -k when invalid, k = the maximal subpart to replace by one
 * U+FFFD (the Unicode rule that Python's and Rust's lossy decoders follow). */
static int utf8_char(const uint8_t *s, size_t n) {
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    int len;
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b >= 0xE0 && b <= 0xEF) { len = 3; lo = b == 0xE0 ? 0xA0 : 0x80; hi = b == 0xED ? 0x9F : 0xBF; }
    else if (b >= 0xF0 && b <= 0xF4) { len = 4; lo = b == 0xF0 ? 0x90 : 0x80; hi = b == 0xF4 ? 0x8F : 0xBF; }
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF)) return -i;
    }
    return len;
}

/* Append piece[n] to the carried bytes; ds->out gets the whole characters. */
static int stream_bytes(nano_detok_stream *ds, const uint8_t *piece, size_t n, int final, size_t *k_out) {
    size_t m = (size_t)ds->n_tail + n, i = 0, k = 0;
    if (m * 3 + 8 > ds->cap) {
        char *p = realloc(ds->out, m * 3 + 8);
        if (!p) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
        ds->out = p;
        ds->cap = m * 3 + 8;
    }
    uint8_t stackbuf[256];
    uint8_t *in = m <= sizeof stackbuf ? stackbuf : malloc(m);
    if (!in) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    memcpy(in, ds->tail, (size_t)ds->n_tail);
    if (n) memcpy(in + ds->n_tail, piece, n);
    ds->n_tail = 0;
    while (i < m) {
        int len = utf8_char(in + i, m - i);
        if (len > 0) { memcpy(ds->out + k, in + i, (size_t)len); k += (size_t)len; i += (size_t)len; }
        else if (len == 0 && !final) { memcpy(ds->tail, in + i, m - i); ds->n_tail = (int)(m - i); break; }
        else { memcpy(ds->out + k, "\xef\xbf\xbd", 3); k += 3; i += len == 0 ? m - i : (size_t)-len; }
    }
    if (in != stackbuf) free(in);
    ds->out[k] = 0;
    *k_out = k;
    return NANO_OK;
}

int nano_detok_stream_push(nano_detok_stream *ds, int32_t token, const char **text, size_t *len) {
    const char *piece;
    size_t n;
    if (!ds || !text || !len) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL argument");
    int st = nano_token_piece(ds->tok, token, &piece, &n);
    if (st == NANO_OK) st = stream_bytes(ds, (const uint8_t *)piece, n, 0, len);
    *text = st == NANO_OK ? ds->out : "";
    if (st != NANO_OK) *len = 0;
    return st;
}

int nano_detok_stream_flush(nano_detok_stream *ds, const char **text, size_t *len) {
    if (!ds || !text || !len) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL argument");
    int st = stream_bytes(ds, NULL, 0, 1, len);
    *text = st == NANO_OK ? ds->out : "";
    if (st != NANO_OK) *len = 0;
    return st;
}

typedef struct {
    const nano_text_params *p;
    nano_detok_stream ds;
    int err;
    /* stop strings: the streamed text so far, how much of it was handed out */
    size_t stop_max;
    char *text;
    size_t len, cap, shown;
    int matched;
} text_stream;

static int emit(text_stream *ts, int32_t token, size_t end) {
    if (end < ts->shown) end = ts->shown;
    int r = 0;
    if (ts->p->on_text) {
        char c = ts->text[end];
        ts->text[end] = 0; /* text[len] is NUL-terminated for the callback */
        r = ts->p->on_text(ts->p->user, token, ts->text + ts->shown, end - ts->shown);
        ts->text[end] = c;
    }
    ts->shown = end;
    return r;
}

static int append_text(text_stream *ts, const char *text, size_t len) {
    if (ts->len + len + 1 > ts->cap) {
        size_t cap = (ts->len + len + 1) * 2 + 64;
        char *t = realloc(ts->text, cap);
        if (!t) return -1;
        ts->text = t;
        ts->cap = cap;
    }
    memcpy(ts->text + ts->len, text, len);
    ts->len += len;
    ts->text[ts->len] = 0;
    return 0;
}

static int on_token(void *user, int32_t token) {
    text_stream *ts = user;
    const char *text;
    size_t len;
    if (nano_detok_stream_push(&ts->ds, token, &text, &len) != NANO_OK) { ts->err = 1; return 1; }
    const nano_text_params *p = ts->p;
    if (p->n_stop_strings <= 0) return p->on_text ? p->on_text(p->user, token, text, len) : 0;
    size_t before = ts->len;
    if (append_text(ts, text, len)) { ts->err = 1; return 1; }
    size_t from = before >= ts->stop_max - 1 ? before - (ts->stop_max - 1) : 0;
    long at = nano_stop_find(ts->text, ts->len, from, p->stop_strings, p->n_stop_strings);
    if (at >= 0) {
        ts->matched = 1;
        emit(ts, token, (size_t)at);
        return 1;
    }
    return emit(ts, token, ts->len - nano_stop_partial(ts->text, ts->len, p->stop_strings,
                                                       p->n_stop_strings));
}

/* ---- generation ------------------------------------------------------------------- */
static int pending_push(nano_text_session *s, const int32_t *ids, int n) {
    if (s->n_pending + n > s->cap_pending) {
        int cap = (s->n_pending + n) * 2 + 8;
        int32_t *p = realloc(s->pending, (size_t)cap * sizeof *p);
        if (!p) return -1;
        s->pending = p;
        s->cap_pending = cap;
    }
    memcpy(s->pending + s->n_pending, ids, (size_t)n * sizeof *ids);
    s->n_pending += n;
    return 0;
}

/* Feed pending + ids[n] as the prompt, generate with streaming. */
static int run(nano_text_session *s, const int32_t *ids, int n, const nano_text_params *p,
               nano_generate_result *res) {
    const nano_tokenizer *tok = s->tm->tok;
    if (p->max_tokens < 1) return nano_set_error(NANO_ERR_INVALID_ARG, "max_tokens must be >= 1");
    size_t stop_max = 0;
    int st = nano_stop_strings_check(p->stop_strings, p->n_stop_strings, &stop_max);
    if (st) return st;
    int n_prompt = s->n_pending + n;
    int32_t *prompt = malloc(((size_t)n_prompt + 1) * sizeof *prompt);
    int32_t *out = malloc((size_t)p->max_tokens * sizeof *out);
    if (!prompt || !out) { free(prompt); free(out); return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); }
    if (s->n_pending) memcpy(prompt, s->pending, (size_t)s->n_pending * sizeof *prompt);
    if (n) memcpy(prompt + s->n_pending, ids, (size_t)n * sizeof *prompt);

    text_stream ts = {.p = p, .ds = {.tok = tok}, .stop_max = stop_max};
    nano_generate_params gp = nano_generate_default_params();
    gp.max_tokens = p->max_tokens;
    gp.sampler = p->sampler;
    gp.stop_ids = tok->stop_ids;
    gp.n_stop_ids = tok->n_stop_ids;
    gp.on_token = on_token;
    gp.user = &ts;
    gp.context_shift = p->context_shift;
    gp.n_keep = p->n_keep;
    nano_generate_result r;
    st = nano_generate(s->ctx, prompt, n_prompt, &gp, out, p->max_tokens, &r);
    if (st == NANO_OK && !ts.matched && ts.ds.n_tail) { /* ended inside a character: one U+FFFD */
        const char *text;
        size_t len;
        if (nano_detok_stream_flush(&ts.ds, &text, &len) != NANO_OK) ts.err = 1;
        else if (p->n_stop_strings > 0) { if (append_text(&ts, text, len)) ts.err = 1; }
        else if (p->on_text && len) p->on_text(p->user, -1, text, len);
    }
    if (st == NANO_OK && !ts.err && !ts.matched && ts.shown < ts.len) emit(&ts, -1, ts.len); /* held back */
    if (st == NANO_OK && ts.err) st = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    if (st == NANO_OK) {
        if (ts.matched && r.stop_reason == NANO_STOP_CALLBACK) r.stop_reason = NANO_STOP_STRING;
        /* nano_generate evaluates every generated token but the last, and the last
         * too when it stopped at a stop id: a token not evaluated stays pending */
        if (r.n_prompt == n_prompt) s->n_pending = 0;
        int missing = r.n_generated > 0 && r.stop_reason != NANO_STOP_TOKEN;
        if (missing && pending_push(s, out + r.n_generated - 1, 1))
            st = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
        if (res) *res = r;
    }
    free(ts.ds.out);
    free(ts.text);
    free(prompt);
    free(out);
    return st;
}

static int tokenize_all(const nano_tokenizer *tok, const char *text, size_t len, int add_bos,
                        int special, tok_ids *ids) {
    if (add_bos && tok->bos_id >= 0) tok_ids_push(ids, tok->bos_id);
    int st = tok_encode(tok, text, len, special, ids);
    if (st == NANO_OK && ids->oom) st = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    if (st == NANO_OK && ids->n > (size_t)INT32_MAX / 2) st = nano_set_error(NANO_ERR_INVALID_ARG, "text too long");
    return st;
}

int nano_text_generate(nano_text_session *s, const char *prompt, const nano_text_params *params,
                       nano_generate_result *result) {
    if (!s || !prompt) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL session or prompt");
    nano_text_params p = params ? *params : nano_text_default_params();
    int empty = nano_context_n_past(s->ctx, NULL) == 0 && s->n_pending == 0;
    tok_ids ids = {0};
    int st = tokenize_all(s->tm->tok, prompt, strlen(prompt), empty && s->tm->tok->add_bos, 0, &ids);
    if (st == NANO_OK) st = run(s, ids.v, (int)ids.n, &p, result);
    if (st == NANO_OK) s->in_reply = 0;
    free(ids.v);
    return st;
}

int nano_text_chat(nano_text_session *s, const nano_chat_message *msgs, int n,
                   const nano_text_params *params, nano_generate_result *result) {
    if (!s || n < 0 || (n && !msgs)) return nano_set_error(NANO_ERR_INVALID_ARG, "bad chat arguments");
    nano_text_params p = params ? *params : nano_text_default_params();
    int first = nano_context_n_past(s->ctx, NULL) == 0 && s->n_pending == 0;
    tok_buf b = {0};
    int st = tok_chat_render(s->tm->tok, msgs, n, first, s->in_reply, 1, &b);
    tok_ids ids = {0};
    if (st == NANO_OK) st = tokenize_all(s->tm->tok, b.s ? b.s : "", b.n, 0, 1, &ids);
    if (st == NANO_OK) st = run(s, ids.v, (int)ids.n, &p, result);
    if (st == NANO_OK) s->in_reply = 1;
    free(ids.v);
    free(b.s);
    return st;
}
