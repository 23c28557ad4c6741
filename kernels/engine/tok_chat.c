/* tok_chat.c - decoding (ids -> bytes) and the chat formats applied natively:
 * ChatML (SmolLM2, with its template's default system prompt) and Gemma turns
 * (system -> user, assistant -> model, content trimmed, BOS first). The text is
 * the same as the model's Jinja template renders (tests compare them). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

int nano_token_piece(const nano_tokenizer *t, int32_t id, const char **bytes, size_t *len) {
    if (!t || !bytes || !len || id < 0 || id >= t->n_vocab)
        return nano_set_error(NANO_ERR_INVALID_ARG, "nano_token_piece: bad token id %d", (int)id);
    *bytes = t->piece + t->piece_off[id];
    *len = t->piece_len[id];
    return NANO_OK;
}

int nano_detokenize(const nano_tokenizer *t, const int32_t *ids, int n, int skip_special, char *out,
                    size_t cap, size_t *n_out) {
    if (!t || (n && !ids) || n < 0 || !n_out || (cap && !out))
        return nano_set_error(NANO_ERR_INVALID_ARG, "nano_detokenize: bad argument");
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab)
            return nano_set_error(NANO_ERR_INVALID_ARG, "nano_detokenize: bad token id %d", (int)id);
        if (skip_special && t->attr[id] == TOK_ATTR_CONTROL) continue;
        uint32_t m = t->piece_len[id];
        if (k < cap) memcpy(out + k, t->piece + t->piece_off[id], k + m <= cap ? m : cap - k);
        k += m;
    }
    *n_out = k;
    return NANO_OK;
}

/* ---- chat ---------------------------------------------------------------------- */
void tok_buf_add(tok_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = 1; return; }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void tok_buf_adds(tok_buf *b, const char *s) { tok_buf_add(b, s, strlen(s)); }

/* Python's str.strip(): White_Space plus U+001C..U+001F. */
static int py_space(uint32_t cp) { return tok_is_space(cp) || (cp >= 0x1C && cp <= 0x1F); }

static void add_trimmed(tok_buf *b, const char *s) {
    size_t n = strlen(s), i = 0, end = 0, adv;
    int started = 0;
    size_t first = n;
    while (i < n) {
        uint32_t cp = tok_utf8_next((const uint8_t *)s + i, n - i, &adv);
        if (!py_space(cp)) {
            if (!started) { first = i; started = 1; }
            end = i + adv;
        }
        i += adv;
    }
    if (started) tok_buf_add(b, s + first, end - first);
}

int tok_chat_render(const nano_tokenizer *t, const nano_chat_message *msgs, int n, int first,
                    int close_reply, int add_generation_prompt, tok_buf *b) {
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return nano_set_error(NANO_ERR_INVALID_ARG, "chat message %d has no role/content", i);
    if (t->chat_format == NANO_CHAT_CHATML) {
        if (close_reply) tok_buf_adds(b, "<|im_end|>\n");
        for (int i = 0; i < n; i++) {
            if (first && i == 0 && strcmp(msgs[0].role, "system") && t->default_system) {
                tok_buf_adds(b, "<|im_start|>system\n");
                tok_buf_adds(b, t->default_system);
                tok_buf_adds(b, "<|im_end|>\n");
            }
            tok_buf_adds(b, "<|im_start|>");
            tok_buf_adds(b, msgs[i].role);
            tok_buf_adds(b, "\n");
            tok_buf_adds(b, msgs[i].content);
            tok_buf_adds(b, "<|im_end|>\n");
        }
        if (add_generation_prompt) tok_buf_adds(b, "<|im_start|>assistant\n");
    } else if (t->chat_format == NANO_CHAT_GEMMA) {
        if (close_reply) tok_buf_adds(b, "<end_of_turn>\n");
        if (first && t->gemma_bos && t->bos_id >= 0)
            tok_buf_add(b, t->str + t->str_off[t->bos_id], t->str_len[t->bos_id]);
        for (int i = 0; i < n; i++) {
            const char *role = msgs[i].role;
            if (!strcmp(role, "system")) role = "user";
            else if (!strcmp(role, "assistant")) role = "model";
            tok_buf_adds(b, "<start_of_turn>");
            tok_buf_adds(b, role);
            tok_buf_adds(b, "\n");
            add_trimmed(b, msgs[i].content);
            tok_buf_adds(b, "<end_of_turn>\n");
        }
        if (add_generation_prompt) tok_buf_adds(b, "<start_of_turn>model\n");
    } else {
        return nano_set_error(NANO_ERR_UNSUPPORTED, "this model has no chat template");
    }
    return b->oom ? nano_set_error(NANO_ERR_NO_MEMORY, "chat: out of memory") : NANO_OK;
}

int nano_chat_apply(const nano_tokenizer *t, const nano_chat_message *msgs, int n,
                    int add_generation_prompt, char *out, size_t cap, size_t *n_out) {
    if (!t || n < 0 || (n && !msgs) || !n_out || (cap && !out))
        return nano_set_error(NANO_ERR_INVALID_ARG, "nano_chat_apply: bad argument");
    tok_buf b = {0};
    int st = tok_chat_render(t, msgs, n, 1, 0, add_generation_prompt, &b);
    if (st == NANO_OK) {
        *n_out = b.n;
        if (cap) {
            size_t k = b.n < cap - 1 ? b.n : cap - 1;
            if (k) memcpy(out, b.s, k);
            out[k] = 0;
        }
    }
    free(b.s);
    return st;
}
