/* tok_load.c - build a nano_tokenizer from HF tokenizer.json bytes and the
 * tokenizer config JSON ({bos_id, eos_id, add_bos, stop_ids, chat_template}).
 *
 * Accepted shapes (what nano_runtime.formats.gguf_tokenizer writes, and the
 * usual HF files of the same families): model BPE; pre_tokenizer null,
 * ByteLevel or Sequence[Digits(individual_digits), ByteLevel]; normalizer null
 * or Sequence/Replace(' ' -> U+2581)/Prepend(U+2581). Anything else is
 * NANO_ERR_UNSUPPORTED naming the part, never a silent mis-tokenization.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* ---- small helpers --------------------------------------------------------- */
static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_u64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

int32_t tok_lookup(const nano_tokenizer *t, const char *s, size_t n) {
    uint32_t h = hash_bytes(s, n), m = t->vocab_cap - 1, i = h & m;
    for (;; i = (i + 1) & m) {
        const tok_slot *e = &t->vocab_tab[i];
        if (!e->id1) return -1;
        int32_t id = e->id1 - 1;
        if (e->hash == h && t->str_len[id] == n && memcmp(t->str + t->str_off[id], s, n) == 0)
            return id;
    }
}

const tok_merge *tok_merge_find(const nano_tokenizer *t, int32_t a, int32_t b) {
    if (!t->merge_cap) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    uint32_t m = t->merge_cap - 1, i = hash_u64(key) & m;
    for (;; i = (i + 1) & m) {
        const tok_merge *e = &t->merge_tab[i];
        if (e->key == key) return e;
        if (!e->key) return NULL;
    }
}

/* A growable arena of NUL-terminated strings addressed by offset. */
typedef struct { char *s; size_t n, cap; } arena;

static long arena_add(arena *a, const char *s, size_t n) {
    if (a->n + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 1 << 16;
        while (cap < a->n + n + 1) cap *= 2;
        char *p = realloc(a->s, cap);
        if (!p) return -1;
        a->s = p;
        a->cap = cap;
    }
    long off = (long)a->n;
    memcpy(a->s + a->n, s, n);
    a->s[a->n + n] = 0;
    a->n += n + 1;
    return off;
}

typedef struct { int32_t id; uint32_t off, len; } vocab_entry;
typedef struct { uint32_t a_off, a_len, b_off, b_len; } merge_entry;
typedef struct { int32_t id; uint32_t off, len; int special; } added_entry;

typedef struct {
    arena text;                    /* all strings read */
    vocab_entry *vocab; size_t n_vocab, cap_vocab;
    merge_entry *merges; size_t n_merges, cap_merges;
    added_entry *added; size_t n_added, cap_added;
    int model_bpe, saw_model;
    int byte_level, digits, replace_space, prepend_space;
    int byte_fallback, fuse_unk, ignore_merges;
    long unk_off; uint32_t unk_len;
    char unsupported[96];
} parse_state;

#define GROW(ptr, n, cap)                                                          \
    do {                                                                           \
        if ((n) == (cap)) {                                                        \
            size_t nc = (cap) ? (cap) * 2 : 1024;                                  \
            void *np = realloc((ptr), nc * sizeof *(ptr));                         \
            if (!np) return -2;                                                    \
            (ptr) = np;                                                            \
            (cap) = nc;                                                            \
        }                                                                          \
    } while (0)

static void unsupported(parse_state *ps, const char *what, const char *name) {
    if (!ps->unsupported[0]) {
        size_t n = strlen(what);
        if (n > 60) n = 60;
        memcpy(ps->unsupported, what, n);
        ps->unsupported[n] = 0;
        strncat(ps->unsupported, name, sizeof ps->unsupported - n - 1);
    }
}

/* Walk a normalizer / pre_tokenizer value, noting the component types.
 * Returns 0, -1 (JSON error). `part`: 0 normalizer, 1 pre_tokenizer. */
static int walk_component(tj_cur *c, parse_state *ps, int part) {
    if (tj_null(c)) return 0;
    int ch = tj_peek(c), r;
    if (ch == '[') {
        if (tj_arr_begin(c)) return -1;
        while ((r = tj_arr_next(c)) == 1)
            if (walk_component(c, ps, part)) return -1;
        return r;
    }
    if (ch != '{') return tj_skip(c);
    if (tj_obj_begin(c)) return -1;
    while ((r = tj_obj_key(c)) == 1) {
        if (!strcmp(c->buf, "type")) {
            if (tj_string(c)) return -1;
            const char *ty = c->buf;
            if (!strcmp(ty, "Sequence")) continue;
            if (part == 1 && !strcmp(ty, "ByteLevel")) ps->byte_level = 1;
            else if (part == 1 && !strcmp(ty, "Digits")) ps->digits = 1;
            else if (part == 0 && !strcmp(ty, "Replace")) ps->replace_space = 1;
            else if (part == 0 && !strcmp(ty, "Prepend")) ps->prepend_space = 1;
            else unsupported(ps, part ? "pre-tokenizer " : "normalizer ", ty);
        } else if (!strcmp(c->buf, "individual_digits")) {
            int v;
            if (tj_bool(c, &v)) return -1;
            if (!v) unsupported(ps, "pre-tokenizer ", "Digits without individual_digits");
        } else if (!strcmp(c->buf, "add_prefix_space") && part == 1) {
            int v;
            if (tj_bool(c, &v)) return -1;
            if (v) unsupported(ps, "pre-tokenizer ", "ByteLevel add_prefix_space");
        } else if (!strcmp(c->buf, "content") && part == 0) {
            if (tj_string(c)) return -1;
            if (strcmp(c->buf, "\xe2\x96\x81")) unsupported(ps, "normalizer content ", c->buf);
        } else if (!strcmp(c->buf, "prepend") && part == 0) {
            if (tj_string(c)) return -1;
            if (strcmp(c->buf, "\xe2\x96\x81")) unsupported(ps, "normalizer prepend ", c->buf);
        } else if (walk_component(c, ps, part)) {
            return -1;
        }
    }
    return r;
}

static int parse_vocab(tj_cur *c, parse_state *ps) {
    int r;
    if (tj_obj_begin(c)) return -1;
    while ((r = tj_obj_key(c)) == 1) {
        long off = arena_add(&ps->text, c->buf, c->len);
        int64_t id;
        if (off < 0) return -2;
        if (tj_int(c, &id)) return -1;
        if (id < 0 || id >= (1 << 24)) return tj_fail(c, "token id out of range");
        GROW(ps->vocab, ps->n_vocab, ps->cap_vocab);
        ps->vocab[ps->n_vocab++] = (vocab_entry){(int32_t)id, (uint32_t)off, (uint32_t)c->len};
    }
    return r;
}

static int parse_merges(tj_cur *c, parse_state *ps) {
    int r;
    if (tj_arr_begin(c)) return -1;
    while ((r = tj_arr_next(c)) == 1) {
        merge_entry m;
        if (tj_peek(c) == '[') { /* ["a", "b"] */
            if (tj_arr_begin(c) || tj_arr_next(c) != 1 || tj_string(c)) return -1;
            long a = arena_add(&ps->text, c->buf, c->len);
            m.a_off = (uint32_t)a, m.a_len = (uint32_t)c->len;
            if (a < 0) return -2;
            if (tj_arr_next(c) != 1 || tj_string(c)) return -1;
            long b = arena_add(&ps->text, c->buf, c->len);
            if (b < 0) return -2;
            m.b_off = (uint32_t)b, m.b_len = (uint32_t)c->len;
            if (tj_arr_next(c) != 0) return tj_fail(c, "a merge is not a pair");
        } else { /* "a b" */
            if (tj_string(c)) return -1;
            char *sp = memchr(c->buf, ' ', c->len);
            if (!sp || sp == c->buf) return tj_fail(c, "a merge is not 'a b'");
            size_t la = (size_t)(sp - c->buf);
            long a = arena_add(&ps->text, c->buf, la);
            long b = arena_add(&ps->text, sp + 1, c->len - la - 1);
            if (a < 0 || b < 0) return -2;
            m = (merge_entry){(uint32_t)a, (uint32_t)la, (uint32_t)b, (uint32_t)(c->len - la - 1)};
        }
        GROW(ps->merges, ps->n_merges, ps->cap_merges);
        ps->merges[ps->n_merges++] = m;
    }
    return r;
}

static int parse_model(tj_cur *c, parse_state *ps) {
    int r;
    ps->saw_model = 1;
    if (tj_obj_begin(c)) return -1;
    while ((r = tj_obj_key(c)) == 1) {
        const char *k = c->buf;
        if (!strcmp(k, "type")) {
            if (tj_string(c)) return -1;
            if (!strcmp(c->buf, "BPE")) ps->model_bpe = 1;
            else unsupported(ps, "model type ", c->buf);
        } else if (!strcmp(k, "vocab")) {
            if ((r = parse_vocab(c, ps))) return r;
        } else if (!strcmp(k, "merges")) {
            if ((r = parse_merges(c, ps))) return r;
        } else if (!strcmp(k, "byte_fallback")) {
            if (tj_bool(c, &ps->byte_fallback)) return -1;
        } else if (!strcmp(k, "fuse_unk")) {
            if (tj_bool(c, &ps->fuse_unk)) return -1;
        } else if (!strcmp(k, "ignore_merges")) {
            if (tj_bool(c, &ps->ignore_merges)) return -1;
        } else if (!strcmp(k, "unk_token")) {
            if (!tj_null(c)) {
                if (tj_string(c)) return -1;
                ps->unk_off = arena_add(&ps->text, c->buf, c->len);
                ps->unk_len = (uint32_t)c->len;
                if (ps->unk_off < 0) return -2;
            }
        } else if (!strcmp(k, "continuing_subword_prefix") || !strcmp(k, "end_of_word_suffix") ||
                   !strcmp(k, "dropout")) {
            char key[32];
            strncpy(key, k, sizeof key - 1);
            key[sizeof key - 1] = 0;
            if (!tj_null(c)) {
                unsupported(ps, "BPE option ", key);
                if (tj_skip(c)) return -1;
            }
        } else if (tj_skip(c)) {
            return -1;
        }
    }
    return r;
}

static int parse_added(tj_cur *c, parse_state *ps) {
    int r, r2;
    if (tj_arr_begin(c)) return -1;
    while ((r = tj_arr_next(c)) == 1) {
        added_entry e = {-1, 0, 0, 0};
        int have_content = 0;
        if (tj_obj_begin(c)) return -1;
        while ((r2 = tj_obj_key(c)) == 1) {
            if (!strcmp(c->buf, "id")) {
                int64_t id;
                if (tj_int(c, &id)) return -1;
                if (id < 0 || id >= (1 << 24)) return tj_fail(c, "token id out of range");
                e.id = (int32_t)id;
            } else if (!strcmp(c->buf, "content")) {
                if (tj_string(c)) return -1;
                long off = arena_add(&ps->text, c->buf, c->len);
                if (off < 0) return -2;
                e.off = (uint32_t)off, e.len = (uint32_t)c->len;
                have_content = 1;
            } else if (!strcmp(c->buf, "special")) {
                if (tj_bool(c, &e.special)) return -1;
            } else if (!strcmp(c->buf, "single_word") || !strcmp(c->buf, "lstrip") ||
                       !strcmp(c->buf, "rstrip")) {
                int v;
                char key[16];
                strncpy(key, c->buf, sizeof key - 1);
                key[sizeof key - 1] = 0;
                if (tj_bool(c, &v)) return -1;
                if (v) unsupported(ps, "added-token option ", key);
            } else if (tj_skip(c)) {
                return -1;
            }
        }
        if (r2 < 0) return -1;
        if (e.id < 0 || !have_content || !e.len) return tj_fail(c, "added token without id/content");
        GROW(ps->added, ps->n_added, ps->cap_added);
        ps->added[ps->n_added++] = e;
    }
    return r;
}

static int parse_tokenizer_json(tj_cur *c, parse_state *ps) {
    int r;
    if (tj_obj_begin(c)) return -1;
    while ((r = tj_obj_key(c)) == 1) {
        if (!strcmp(c->buf, "model")) r = parse_model(c, ps);
        else if (!strcmp(c->buf, "added_tokens")) r = parse_added(c, ps);
        else if (!strcmp(c->buf, "normalizer")) r = walk_component(c, ps, 0);
        else if (!strcmp(c->buf, "pre_tokenizer")) r = walk_component(c, ps, 1);
        else r = tj_skip(c); /* decoder, post_processor, truncation, padding, version */
        if (r) return r;
    }
    if (r == 0 && tj_peek(c)) return tj_fail(c, "trailing characters");
    return r;
}

/* ---- building the tables ------------------------------------------------------ */
static const uint16_t *gpt2_byte_chars(void) {
    /* GPT-2's printable alphabet: byte b -> code point (bytes_to_unicode). */
    static uint16_t map[256];
    static int ready;
    if (!ready) {
        int n = 0;
        for (int b = 0; b < 256; b++) {
            int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
            map[b] = printable ? (uint16_t)b : (uint16_t)(256 + n++);
        }
        ready = 1;
    }
    return map;
}

static int set_str(nano_tokenizer *t, arena *a, int32_t id, const char *s, size_t n) {
    long off = arena_add(a, s, n);
    if (off < 0) return -1;
    t->str_off[id] = (uint32_t)off;
    t->str_len[id] = (uint32_t)n;
    return 0;
}

/* Decoded bytes of token `id`, appended to arena `pa`. */
static int make_piece(nano_tokenizer *t, arena *pa, int32_t id, const int16_t *inv) {
    const char *s = t->str + t->str_off[id];
    size_t n = t->str_len[id];
    char tmp[1024];
    char *out = n * 3 + 4 <= sizeof tmp ? tmp : malloc(n * 3 + 4);
    size_t k = 0;
    if (!out) return -1;
    if (t->attr[id] == TOK_ATTR_CONTROL || t->attr[id] == TOK_ATTR_NONE) {
        memcpy(out, s, n);
        k = n;
    } else if (t->attr[id] == TOK_ATTR_BYTE) {
        out[k++] = (char)strtol(s + 3, NULL, 16);
    } else if (t->kind == NANO_TOK_BYTE_BPE && t->attr[id] == TOK_ATTR_NORMAL) {
        for (size_t i = 0; i < n;) {
            size_t adv;
            uint32_t cp = tok_utf8_next((const uint8_t *)s + i, n - i, &adv);
            if (cp < 324 && inv[cp] >= 0) out[k++] = (char)inv[cp];
            else { memcpy(out + k, s + i, adv); k += adv; }
            i += adv;
        }
    } else { /* SPM pieces (and user tokens): U+2581 -> ' ' */
        for (size_t i = 0; i < n;) {
            if (t->kind == NANO_TOK_SPM_BPE && i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                out[k++] = ' ';
                i += 3;
            } else {
                out[k++] = s[i++];
            }
        }
    }
    long off = arena_add(pa, out, k);
    if (out != tmp) free(out);
    if (off < 0) return -1;
    t->piece_off[id] = (uint32_t)off;
    t->piece_len[id] = (uint32_t)k;
    return 0;
}

static int is_byte_token(const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    return n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && strchr(hex, s[3]) && s[3] &&
           strchr(hex, s[4]) && s[4] && s[5] == '>';
}

static int trie_add(nano_tokenizer *t, int32_t *cap, const char *s, size_t n, int32_t id) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t ch = t->trie[node].child;
        while (ch >= 0 && t->trie[ch].byte != b) ch = t->trie[ch].sibling;
        if (ch < 0) {
            if (t->n_trie == *cap) {
                int32_t nc = *cap * 2;
                tok_trie *p = realloc(t->trie, (size_t)nc * sizeof *p);
                if (!p) return -1;
                t->trie = p;
                *cap = nc;
            }
            ch = t->n_trie++;
            t->trie[ch] = (tok_trie){-1, t->trie[node].child, -1, b};
            t->trie[node].child = ch;
        }
        node = ch;
    }
    t->trie[node].token = id;
    return 0;
}

static int build(nano_tokenizer *t, parse_state *ps) {
    if (ps->unsupported[0])
        return nano_set_error(NANO_ERR_UNSUPPORTED, "tokenizer: unsupported %s", ps->unsupported);
    if (!ps->saw_model || !ps->model_bpe)
        return nano_set_error(NANO_ERR_UNSUPPORTED, "tokenizer: unsupported model (only BPE)");
    if (ps->byte_level && (ps->replace_space || ps->prepend_space))
        return nano_set_error(NANO_ERR_UNSUPPORTED, "tokenizer: ByteLevel with a normalizer");
    if (!ps->byte_level && ps->digits)
        return nano_set_error(NANO_ERR_UNSUPPORTED, "tokenizer: Digits without ByteLevel");
    if (!ps->byte_level && !ps->replace_space)
        return nano_set_error(NANO_ERR_UNSUPPORTED,
                              "tokenizer: a BPE model needs ByteLevel or the U+2581 normalizer");
    t->kind = ps->byte_level ? NANO_TOK_BYTE_BPE : NANO_TOK_SPM_BPE;
    t->digits = ps->digits;
    t->replace_space = ps->replace_space;
    t->prepend_space = ps->prepend_space;
    t->byte_fallback = ps->byte_fallback;
    t->fuse_unk = ps->fuse_unk;
    t->ignore_merges = ps->ignore_merges;

    int32_t max_id = -1;
    for (size_t i = 0; i < ps->n_vocab; i++) if (ps->vocab[i].id > max_id) max_id = ps->vocab[i].id;
    for (size_t i = 0; i < ps->n_added; i++) if (ps->added[i].id > max_id) max_id = ps->added[i].id;
    if (max_id < 0) return nano_set_error(NANO_ERR_FORMAT, "tokenizer: empty vocabulary");
    int n = t->n_vocab = max_id + 1;
    t->str_off = calloc((size_t)n, sizeof *t->str_off);
    t->str_len = calloc((size_t)n, sizeof *t->str_len);
    t->piece_off = calloc((size_t)n, sizeof *t->piece_off);
    t->piece_len = calloc((size_t)n, sizeof *t->piece_len);
    t->attr = malloc((size_t)n);
    t->vocab_cap = pow2_at_least((uint64_t)n * 2);
    t->vocab_tab = calloc(t->vocab_cap, sizeof *t->vocab_tab);
    if (!t->str_off || !t->str_len || !t->piece_off || !t->piece_len || !t->attr || !t->vocab_tab)
        return nano_set_error(NANO_ERR_NO_MEMORY, "tokenizer: out of memory");
    memset(t->attr, TOK_ATTR_NONE, (size_t)n);

    /* token texts: vocabulary, then added tokens (their content wins, as in HF) */
    arena sa = {0};
    for (size_t i = 0; i < ps->n_vocab; i++) {
        vocab_entry *v = &ps->vocab[i];
        if (set_str(t, &sa, v->id, ps->text.s + v->off, v->len)) goto oom;
        t->attr[v->id] = TOK_ATTR_NORMAL;
    }
    for (size_t i = 0; i < ps->n_added; i++) {
        added_entry *a = &ps->added[i];
        if (set_str(t, &sa, a->id, ps->text.s + a->off, a->len)) goto oom;
        t->attr[a->id] = a->special ? TOK_ATTR_CONTROL : TOK_ATTR_USER;
    }
    t->str = sa.s;
    sa.s = NULL;
    for (int32_t id = 0; id < n; id++) {
        if (t->attr[id] == TOK_ATTR_NONE) continue;
        const char *s = t->str + t->str_off[id];
        if (t->kind == NANO_TOK_SPM_BPE && t->attr[id] == TOK_ATTR_NORMAL &&
            is_byte_token(s, t->str_len[id]))
            t->attr[id] = TOK_ATTR_BYTE;
        /* later ids win for duplicate texts, as a JSON-built HashMap would */
        uint32_t hv = hash_bytes(s, t->str_len[id]), m = t->vocab_cap - 1, h = hv & m;
        for (;; h = (h + 1) & m) {
            tok_slot *e = &t->vocab_tab[h];
            if (!e->id1) { *e = (tok_slot){hv, id + 1}; break; }
            if (e->hash == hv && t->str_len[e->id1 - 1] == t->str_len[id] &&
                !memcmp(t->str + t->str_off[e->id1 - 1], s, t->str_len[id])) {
                e->id1 = id + 1;
                break;
            }
        }
    }

    /* merges: (a, b) -> (rank, id of a+b); a later duplicate replaces an earlier one */
    /* load factor <= 0.75 (16 MB for Gemma's 515k merges) */
    t->merge_cap = ps->n_merges ? pow2_at_least((uint64_t)ps->n_merges * 4 / 3 + 1) : 0;
    if (t->merge_cap && !(t->merge_tab = calloc(t->merge_cap, sizeof *t->merge_tab))) goto oom;
    char small[512];
    for (size_t r = 0; r < ps->n_merges; r++) {
        merge_entry *me = &ps->merges[r];
        const char *a = ps->text.s + me->a_off, *b = ps->text.s + me->b_off;
        int32_t ia = tok_lookup(t, a, me->a_len), ib = tok_lookup(t, b, me->b_len);
        size_t ln = (size_t)me->a_len + me->b_len;
        char *cat = ln <= sizeof small ? small : malloc(ln);
        if (!cat) goto oom;
        memcpy(cat, a, me->a_len);
        memcpy(cat + me->a_len, b, me->b_len);
        int32_t inew = tok_lookup(t, cat, ln);
        if (cat != small) free(cat);
        if (ia < 0 || ib < 0 || inew < 0)
            return nano_set_error(NANO_ERR_FORMAT, "tokenizer: merge %zu uses a token outside the vocabulary", r);
        uint64_t key = ((uint64_t)(uint32_t)(ia + 1) << 32) | (uint32_t)(ib + 1);
        uint32_t m = t->merge_cap - 1, h = hash_u64(key) & m;
        while (t->merge_tab[h].key && t->merge_tab[h].key != key) h = (h + 1) & m;
        t->merge_tab[h] = (tok_merge){key, (int32_t)r, inew};
    }

    t->unk_id = ps->unk_off >= 0 ? tok_lookup(t, ps->text.s + ps->unk_off, ps->unk_len) : -1;

    /* initial symbols of bytes, and decoded pieces */
    int16_t inv[324];
    for (int i = 0; i < 324; i++) inv[i] = -1;
    const uint16_t *bc = gpt2_byte_chars();
    for (int b = 0; b < 256; b++) {
        char u[8];
        int k;
        if (t->kind == NANO_TOK_BYTE_BPE) {
            inv[bc[b]] = (int16_t)b;
            k = tok_utf8_put(bc[b], u);
        } else {
            static const char hex[] = "0123456789ABCDEF";
            u[0] = '<', u[1] = '0', u[2] = 'x', u[3] = hex[b >> 4], u[4] = hex[b & 15], u[5] = '>';
            k = 6;
        }
        t->byte_sym[b] = tok_lookup(t, u, (size_t)k);
    }
    arena pa = {0};
    for (int32_t id = 0; id < n; id++)
        if (make_piece(t, &pa, id, inv)) { free(pa.s); goto oom; }
    t->piece = pa.s ? pa.s : calloc(1, 1);

    /* added tokens: a byte trie for leftmost-longest matching */
    int32_t cap = 256;
    t->trie = malloc((size_t)cap * sizeof *t->trie);
    if (!t->trie || !t->piece) goto oom;
    t->trie[0] = (tok_trie){-1, -1, -1, 0};
    t->n_trie = 1;
    for (size_t i = 0; i < ps->n_added; i++)
        if (trie_add(t, &cap, ps->text.s + ps->added[i].off, ps->added[i].len, ps->added[i].id)) goto oom;
    return NANO_OK;
oom:
    free(sa.s);
    return nano_set_error(NANO_ERR_NO_MEMORY, "tokenizer: out of memory");
}

/* ---- the tokenizer config ------------------------------------------------------ */
static int parse_config(nano_tokenizer *t, const char *cfg, char **tpl_out) {
    tj_cur c;
    int r;
    tj_init(&c, cfg, strlen(cfg));
    int32_t *stops = NULL;
    int n_stops = 0, cap = 0;
    if (tj_obj_begin(&c)) goto bad;
    while ((r = tj_obj_key(&c)) == 1) {
        if (!strcmp(c.buf, "bos_id") || !strcmp(c.buf, "eos_id")) {
            int bos = c.buf[0] == 'b';
            int64_t v = -1;
            if (!tj_null(&c) && tj_int(&c, &v)) goto bad;
            if (v < -1 || v >= t->n_vocab) { tj_fail(&c, "bos/eos id outside the vocabulary"); goto bad; }
            if (bos) t->bos_id = (int32_t)v; else t->eos_id = (int32_t)v;
        } else if (!strcmp(c.buf, "add_bos")) {
            if (!tj_null(&c) && tj_bool(&c, &t->add_bos)) goto bad;
        } else if (!strcmp(c.buf, "stop_ids")) {
            if (tj_null(&c)) continue;
            if (tj_arr_begin(&c)) goto bad;
            while ((r = tj_arr_next(&c)) == 1) {
                int64_t v;
                if (tj_int(&c, &v)) goto bad;
                if (v < 0 || v >= t->n_vocab) { tj_fail(&c, "stop id outside the vocabulary"); goto bad; }
                if (n_stops == cap) {
                    cap = cap ? cap * 2 : 8;
                    int32_t *p = realloc(stops, (size_t)cap * sizeof *p);
                    if (!p) { tj_fail(&c, "out of memory"); goto bad; }
                    stops = p;
                }
                stops[n_stops++] = (int32_t)v;
            }
            if (r < 0) goto bad;
        } else if (!strcmp(c.buf, "chat_template")) {
            if (tj_null(&c)) continue;
            if (tj_string(&c)) goto bad;
            free(*tpl_out);
            *tpl_out = strdup(c.buf);
        } else if (tj_skip(&c)) {
            goto bad;
        }
    }
    if (r < 0) goto bad;
    tj_free(&c);
    t->stop_ids = stops;
    t->n_stop_ids = n_stops;
    return NANO_OK;
bad:
    free(stops);
    r = nano_set_error(NANO_ERR_FORMAT, "tokenizer config: %s", c.err[0] ? c.err : "malformed");
    tj_free(&c);
    return r;
}

/* The chat format, from the template's tell-tale markers. */
static int detect_chat(nano_tokenizer *t, const char *tpl) {
    if (!tpl) return NANO_OK;
    if (strstr(tpl, "<|im_start|>")) {
        t->chat_format = NANO_CHAT_CHATML;
        const char *mark = "<|im_start|>system\n", *s = strstr(tpl, mark), *e;
        if (s && (s += strlen(mark), e = strstr(s, "<|im_end|>")) && strstr(tpl, "!= 'system'")) {
            t->default_system = strndup(s, (size_t)(e - s));
            if (!t->default_system) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
        }
    } else if (strstr(tpl, "<start_of_turn>")) {
        t->chat_format = NANO_CHAT_GEMMA;
        t->gemma_bos = strstr(tpl, "bos_token") != NULL;
    }
    return NANO_OK;
}

int nano_tokenizer_load(const char *json, size_t json_len, const char *config_json,
                        nano_tokenizer **out) {
    if (!out || !json) return nano_set_error(NANO_ERR_INVALID_ARG, "tokenizer: NULL argument");
    *out = NULL;
    nano_tokenizer *t = calloc(1, sizeof *t);
    parse_state *ps = calloc(1, sizeof *ps);
    if (!t || !ps) { free(t); free(ps); return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); }
    t->bos_id = t->eos_id = t->unk_id = -1;
    ps->unk_off = -1;
    tj_cur c;
    tj_init(&c, json, json_len);
    int r = parse_tokenizer_json(&c, ps), st;
    if (r == -2) st = nano_set_error(NANO_ERR_NO_MEMORY, "tokenizer: out of memory");
    else if (r) st = nano_set_error(NANO_ERR_FORMAT, "tokenizer.json: %s", c.err[0] ? c.err : "malformed");
    else st = build(t, ps);
    tj_free(&c);
    char *tpl = NULL;
    if (st == NANO_OK && config_json) st = parse_config(t, config_json, &tpl);
    if (st == NANO_OK) st = detect_chat(t, tpl);
    free(tpl);
    free(ps->text.s);
    free(ps->vocab);
    free(ps->merges);
    free(ps->added);
    free(ps);
    if (st != NANO_OK) { nano_tokenizer_free(t); return st; }
    *out = t;
    return NANO_OK;
}

void nano_tokenizer_free(nano_tokenizer *t) {
    if (!t) return;
    free(t->str); free(t->str_off); free(t->str_len);
    free(t->piece); free(t->piece_off); free(t->piece_len);
    free(t->attr); free(t->vocab_tab); free(t->merge_tab); free(t->trie);
    free(t->stop_ids); free(t->default_system);
    free(t);
}

int nano_tokenizer_get_info(const nano_tokenizer *t, nano_tokenizer_info *info) {
    if (!t || !info) return nano_set_error(NANO_ERR_INVALID_ARG, "tokenizer: NULL argument");
    info->kind = t->kind;
    info->vocab_size = t->n_vocab;
    info->bos_id = t->bos_id;
    info->eos_id = t->eos_id;
    info->add_bos = t->add_bos;
    info->chat_format = t->chat_format;
    info->n_stop_ids = t->n_stop_ids;
    info->stop_ids = t->stop_ids;
    return NANO_OK;
}

int nano_tokenizer_from_model(const nano_model *model, nano_tokenizer **out) {
    const void *data;
    size_t n;
    if (!model || !out) return nano_set_error(NANO_ERR_INVALID_ARG, "tokenizer: NULL argument");
    *out = NULL;
    if (nano_model_tensor(model, "tokenizer.json", &data, &n) != NANO_OK)
        return nano_set_error(NANO_ERR_FORMAT, "model file has no \"tokenizer.json\" tensor");
    return nano_tokenizer_load((const char *)data, n, nano_model_meta(model, "nano.tokenizer_config"), out);
}
