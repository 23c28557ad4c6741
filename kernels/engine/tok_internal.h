/* tok_internal.h - the native tokenizer's private structures (not public).
 *
 * One nano_tokenizer holds, for ids 0..n_vocab-1: the token text as written in
 * tokenizer.json (`str`, UTF-8, used for lookups and merges) and the bytes the
 * token stands for (`piece`, used for decoding). Lookups go through open-addressing
 * hash tables built once at load; encoding allocates only per call.
 */
#ifndef NANO_TOK_INTERNAL_H
#define NANO_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nano_text.h"

/* Set the calling thread's detailed message and return status (engine). */
int nano_set_error(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- UTF-8 and character classes (tok_unicode.c) ---------------------------- */
/* Decode one code point at s[0..n); *adv = bytes consumed (>= 1). An invalid or
 * truncated sequence decodes as one byte with code point 0xFFFD. */
uint32_t tok_utf8_next(const uint8_t *s, size_t n, size_t *adv);
int tok_utf8_put(uint32_t cp, char *out); /* 1..4 bytes written */
int tok_is_letter(uint32_t cp);           /* \p{L} */
int tok_is_number(uint32_t cp);           /* \p{N} */
int tok_is_space(uint32_t cp);            /* \s (White_Space) */

/* ---- a streaming JSON cursor (tok_json.c) ------------------------------------ */
/* Reads JSON in place without building a tree (the Gemma tokenizer.json has
 * ~800k strings). Every read is bounds-checked; the first error sticks in `err`. */
typedef struct {
    const char *p, *end, *start;
    int depth;
    uint8_t first[64]; /* per open container: no member read yet */
    char err[96];
    char *buf;       /* the last string read, unescaped, NUL-terminated */
    size_t len, cap;
} tj_cur;

void tj_init(tj_cur *c, const char *s, size_t n);
void tj_free(tj_cur *c);
int tj_peek(tj_cur *c);                 /* next non-space char, 0 at end */
int tj_string(tj_cur *c);               /* -> c->buf/c->len; 0 ok, -1 error */
int tj_int(tj_cur *c, int64_t *v);      /* integer number */
int tj_bool(tj_cur *c, int *v);         /* true/false */
int tj_null(tj_cur *c);                 /* consumes null if next; 1 if it was null */
int tj_skip(tj_cur *c);                 /* any value */
/* Objects: if (tj_obj_begin(c)) fail; while ((r = tj_obj_key(c)) == 1) { key in
 * c->buf; read the value }  (r: 0 at '}', -1 on error).
 * Arrays: the same with tj_arr_begin / tj_arr_next. */
int tj_obj_begin(tj_cur *c);
int tj_obj_key(tj_cur *c);
int tj_arr_begin(tj_cur *c);
int tj_arr_next(tj_cur *c);
int tj_fail(tj_cur *c, const char *what);

/* ---- the tokenizer ------------------------------------------------------------ */
enum { TOK_ATTR_NORMAL = 0, TOK_ATTR_CONTROL = 1, TOK_ATTR_USER = 2, TOK_ATTR_BYTE = 3,
       TOK_ATTR_NONE = 4 /* id not used by the vocabulary */ };

typedef struct { uint64_t key; int32_t rank, id; } tok_merge; /* key = a << 32 | b */
typedef struct { uint32_t hash; int32_t id1; } tok_slot;      /* the hash saves string reads */

typedef struct {            /* added-token trie node */
    int32_t child, sibling; /* first child / next sibling, -1 = none */
    int32_t token;          /* token ending here, -1 = none */
    uint8_t byte;
} tok_trie;

struct nano_tokenizer {
    int kind;                   /* NANO_TOK_* */
    int digits;                 /* Digits(individual_digits) before ByteLevel */
    int prepend_space;          /* SPM: normalizer prepends U+2581 */
    int replace_space;          /* SPM: normalizer replaces ' ' with U+2581 */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;             /* -1 = none */
    int n_vocab;

    char *str;                  /* token texts, NUL-separated      */
    uint32_t *str_off, *str_len;/* [n_vocab]                       */
    char *piece;                /* decoded bytes of each token      */
    uint32_t *piece_off, *piece_len; /* [n_vocab]                  */
    uint8_t *attr;              /* [n_vocab] TOK_ATTR_*             */

    tok_slot *vocab_tab;        /* [vocab_cap] token text -> id (id+1, 0 = empty) */
    uint32_t vocab_cap;
    tok_merge *merge_tab;       /* [merge_cap] key 0 = empty (ids +1 inside the key) */
    uint32_t merge_cap;
    int32_t byte_sym[256];      /* byte-level: id of the byte's GPT-2 char; SPM: <0xNN>; -1 */

    tok_trie *trie;             /* added tokens, root = node 0 */
    int32_t n_trie;

    int32_t bos_id, eos_id;
    int add_bos;
    int32_t *stop_ids;
    int n_stop_ids;
    int chat_format;            /* NANO_CHAT_* */
    char *default_system;       /* ChatML default system prompt, or NULL */
    int gemma_bos;              /* Gemma template starts with {{ bos_token }} */
};

int32_t tok_lookup(const nano_tokenizer *t, const char *s, size_t n); /* -1 if absent */
const tok_merge *tok_merge_find(const nano_tokenizer *t, int32_t a, int32_t b);

/* A growable int32 vector (encode output). */
typedef struct { int32_t *v; size_t n, cap; int oom; } tok_ids;
void tok_ids_push(tok_ids *ids, int32_t id);

/* Encode text[len] (no BOS) appending to ids; 0 or a NANO_ERR_*. (tok_encode.c) */
int tok_encode(const nano_tokenizer *t, const char *text, size_t len, int special, tok_ids *ids);

/* A growable byte buffer (chat rendering). */
typedef struct { char *s; size_t n, cap; int oom; } tok_buf;
void tok_buf_add(tok_buf *b, const char *s, size_t n);
void tok_buf_adds(tok_buf *b, const char *s);

/* Append the chat turns of msgs[n] to b. first: the conversation starts here
 * (BOS / default system prompt); close_reply: close a previous assistant reply
 * first. (tok_chat.c) */
int tok_chat_render(const nano_tokenizer *t, const nano_chat_message *msgs, int n, int first,
                    int close_reply, int add_generation_prompt, tok_buf *b);

#endif
