/* tok_encode.c - text -> token ids, step for step as HF `tokenizers` does it:
 *
 *   1. added tokens are split out of the raw text, leftmost-longest (control
 *      tokens only when `special`; a skipped control token stays plain text);
 *   2. each plain segment is normalized (SPM: ' ' -> U+2581, optional prefix);
 *   3. pre-tokenized (byte-level: Digits isolates every \p{N}, then the GPT-2
 *      regex, hand-written below; SPM: the whole segment is one word);
 *   4. each word becomes initial symbols (byte-level: one per byte; SPM: one per
 *      character, or <0xNN> byte tokens for characters outside the vocabulary)
 *      and is merged pair by pair, lowest merge rank first, leftmost on ties.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void tok_ids_push(tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) { ids->oom = 1; return; }
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
}

/* ---- BPE over one word ------------------------------------------------------ */
typedef struct { int32_t rank, pos, id; } bpe_cand;

typedef struct {         /* scratch reused across words of one call */
    int32_t *sym, *prev, *next;
    uint8_t *alive;
    bpe_cand *heap;
    size_t cap, heap_n, heap_cap;
    int oom;
} bpe_work;

static int cand_less(const bpe_cand *a, const bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_work *w, bpe_cand c) {
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        bpe_cand *h = realloc(w->heap, cap * sizeof *h);
        if (!h) { w->oom = 1; return; }
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static bpe_cand heap_pop(bpe_work *w) {
    bpe_cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bpe_cand *best = &last;
        if (l < n && cand_less(&w->heap[l], best)) { m = l; best = &w->heap[l]; }
        if (r < n && cand_less(&w->heap[r], best)) { m = r; }
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

static int work_reserve(bpe_work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(w->sym, cap * sizeof *a), *b, *c;
    if (!a) return -1;
    w->sym = a;
    if (!(b = realloc(w->prev, cap * sizeof *b))) return -1;
    w->prev = b;
    if (!(c = realloc(w->next, cap * sizeof *c))) return -1;
    w->next = c;
    uint8_t *d = realloc(w->alive, cap);
    if (!d) return -1;
    w->alive = d;
    w->cap = cap;
    return 0;
}

static void try_pair(const nano_tokenizer *t, bpe_work *w, int32_t pos) {
    int32_t nx = w->next[pos];
    if (nx < 0) return;
    const tok_merge *m = tok_merge_find(t, w->sym[pos], w->sym[nx]);
    if (m) heap_push(w, (bpe_cand){m->rank, pos, m->id});
}

/* Merge w->sym[0..n) in place and append the result to ids. */
static void bpe_word(const nano_tokenizer *t, bpe_work *w, size_t n, tok_ids *ids) {
    for (size_t i = 0; i < n; i++) {
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        w->alive[i] = 1;
    }
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(t, w, (int32_t)i);
    while (w->heap_n && !w->oom) {
        bpe_cand c = heap_pop(w);
        int32_t p = c.pos, r = w->next[p];
        if (!w->alive[p] || r < 0) continue;
        const tok_merge *m = tok_merge_find(t, w->sym[p], w->sym[r]);
        if (!m || m->id != c.id) continue; /* stale candidate */
        w->sym[p] = c.id;
        w->alive[r] = 0;
        w->next[p] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = p;
        if (w->prev[p] >= 0) try_pair(t, w, w->prev[p]);
        try_pair(t, w, p);
    }
    if (w->oom) return;
    for (int32_t i = 0; i >= 0; i = w->next[i]) tok_ids_push(ids, w->sym[i]);
}

/* ---- byte-level words --------------------------------------------------------- */
static void byte_word(const nano_tokenizer *t, bpe_work *w, const uint8_t *s, size_t n, tok_ids *ids) {
    if (!n) return;
    if (t->ignore_merges && n <= 64) { /* a whole word in the vocabulary is one token */
        char tmp[64 * 2];
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            int32_t b = t->byte_sym[s[i]];
            if (b < 0) { k = 0; break; }
            memcpy(tmp + k, t->str + t->str_off[b], t->str_len[b]);
            k += t->str_len[b];
        }
        int32_t id = k ? tok_lookup(t, tmp, k) : -1;
        if (id >= 0) { tok_ids_push(ids, id); return; }
    }
    if (work_reserve(w, n)) { w->oom = 1; return; }
    for (size_t i = 0; i < n; i++) w->sym[i] = t->byte_sym[s[i]];
    bpe_word(t, w, n, ids);
}

/* Class of a code point for the GPT-2 regex. */
enum { C_LETTER, C_NUMBER, C_SPACE, C_OTHER };
static int cp_class(uint32_t cp) {
    if (tok_is_letter(cp)) return C_LETTER;
    if (tok_is_number(cp)) return C_NUMBER;
    if (tok_is_space(cp)) return C_SPACE;
    return C_OTHER;
}

/* The GPT-2 pre-tokenizer regex over s[0..n), each match a word:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void gpt2_split(const nano_tokenizer *t, bpe_work *w, const uint8_t *s, size_t n, tok_ids *ids) {
    size_t i = 0;
    while (i < n && !w->oom) {
        size_t a1, a2;
        uint32_t c = tok_utf8_next(s + i, n - i, &a1);
        size_t j = i + a1; /* end of the current match */
        if (c == '\'' && j < n) {
            uint8_t c1 = s[j], c2 = j + 1 < n ? s[j + 1] : 0;
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                byte_word(t, w, s + i, 2, ids);
                i += 2;
                continue;
            }
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                byte_word(t, w, s + i, 3, ids);
                i += 3;
                continue;
            }
        }
        int cls = cp_class(c);
        size_t start = i; /* the word starts at i; the class run starts at k */
        size_t k = i;
        if (c == ' ' && j < n) {
            uint32_t c2 = tok_utf8_next(s + j, n - j, &a2);
            int cls2 = cp_class(c2);
            if (cls2 != C_SPACE) { cls = cls2; k = j; }
        }
        if (cls != C_SPACE) { /* ' ?\p{L}+' | ' ?\p{N}+' | ' ?[^\s\p{L}\p{N}]+' */
            while (k < n) {
                uint32_t d = tok_utf8_next(s + k, n - k, &a2);
                if (cp_class(d) != cls) break;
                k += a2;
            }
            byte_word(t, w, s + start, k - start, ids);
            i = k;
            continue;
        }
        /* whitespace run [i, k): '\s+(?!\S)' leaves its last char to the next word
         * when a non-space follows; a single one is taken by '\s+' */
        size_t last = i;
        k = i;
        while (k < n) {
            uint32_t d = tok_utf8_next(s + k, n - k, &a2);
            if (cp_class(d) != C_SPACE) break;
            last = k;
            k += a2;
        }
        if (k < n && last > i) k = last;
        byte_word(t, w, s + i, k - i, ids);
        i = k;
    }
}

static void byte_level_segment(const nano_tokenizer *t, bpe_work *w, const uint8_t *s, size_t n,
                               tok_ids *ids) {
    if (!t->digits) { gpt2_split(t, w, s, n, ids); return; }
    size_t run = 0, i = 0; /* Digits(individual_digits): every \p{N} on its own */
    while (i < n) {
        size_t adv;
        uint32_t c = tok_utf8_next(s + i, n - i, &adv);
        if (tok_is_number(c)) {
            gpt2_split(t, w, s + run, i - run, ids);
            gpt2_split(t, w, s + i, adv, ids);
            run = i + adv;
        }
        i += adv;
    }
    gpt2_split(t, w, s + run, n - run, ids);
}

/* ---- SentencePiece-style segments ----------------------------------------------- */
static void spm_segment(const nano_tokenizer *t, bpe_work *w, const uint8_t *s, size_t n, tok_ids *ids) {
    if (!n) return;
    /* normalized text: optional U+2581 prefix, ' ' -> U+2581 */
    size_t cap = n * 3 + 3, m = 0;
    char *norm = malloc(cap);
    if (!norm || work_reserve(w, cap)) { free(norm); w->oom = 1; return; }
    if (t->prepend_space) { memcpy(norm, "\xe2\x96\x81", 3); m = 3; }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' && t->replace_space) { memcpy(norm + m, "\xe2\x96\x81", 3); m += 3; }
        else norm[m++] = (char)s[i];
    }
    if (t->ignore_merges) {
        int32_t id = tok_lookup(t, norm, m);
        if (id >= 0) { tok_ids_push(ids, id); free(norm); return; }
    }
    size_t ns = 0;
    int last_unk = 0;
    for (size_t i = 0; i < m;) {
        size_t adv;
        tok_utf8_next((const uint8_t *)norm + i, m - i, &adv);
        int32_t id = tok_lookup(t, norm + i, adv);
        if (id >= 0) {
            w->sym[ns++] = id;
            last_unk = 0;
        } else {
            int ok = t->byte_fallback;
            for (size_t b = 0; ok && b < adv; b++) ok = t->byte_sym[(uint8_t)norm[i + b]] >= 0;
            if (ok) {
                for (size_t b = 0; b < adv; b++) w->sym[ns++] = t->byte_sym[(uint8_t)norm[i + b]];
                last_unk = 0;
            } else if (t->unk_id >= 0) {
                if (!(t->fuse_unk && last_unk)) w->sym[ns++] = t->unk_id;
                last_unk = 1;
            }
        }
        i += adv;
    }
    free(norm);
    if (ns) bpe_word(t, w, ns, ids);
}

static void plain_segment(const nano_tokenizer *t, bpe_work *w, const char *s, size_t n, tok_ids *ids) {
    if (!n) return;
    if (t->kind == NANO_TOK_BYTE_BPE) byte_level_segment(t, w, (const uint8_t *)s, n, ids);
    else spm_segment(t, w, (const uint8_t *)s, n, ids);
}

/* Longest added token starting at s[0..n): its id and length, or -1. */
static int32_t added_at(const nano_tokenizer *t, const char *s, size_t n, size_t *len) {
    int32_t node = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t ch = t->trie[node].child;
        while (ch >= 0 && t->trie[ch].byte != (uint8_t)s[i]) ch = t->trie[ch].sibling;
        if (ch < 0) break;
        node = ch;
        if (t->trie[node].token >= 0) { best = t->trie[node].token; *len = i + 1; }
    }
    return best;
}

int tok_encode(const nano_tokenizer *t, const char *text, size_t len, int special, tok_ids *ids) {
    bpe_work w = {0};
    size_t seg = 0, i = 0;
    while (i < len && !w.oom) {
        size_t ml;
        int32_t id = t->trie[0].child >= 0 ? added_at(t, text + i, len - i, &ml) : -1;
        if (id < 0) { i++; continue; }
        if (t->attr[id] == TOK_ATTR_CONTROL && !special) { i += ml; continue; } /* stays text */
        plain_segment(t, &w, text + seg, i - seg, ids);
        tok_ids_push(ids, id);
        i += ml;
        seg = i;
    }
    if (!w.oom) plain_segment(t, &w, text + seg, len - seg, ids);
    int oom = w.oom || ids->oom;
    free(w.sym); free(w.prev); free(w.next); free(w.alive); free(w.heap);
    return oom ? nano_set_error(NANO_ERR_NO_MEMORY, "tokenize: out of memory") : NANO_OK;
}

int nano_tokenize(const nano_tokenizer *t, const char *text, size_t len, int add_bos, int special,
                  int32_t *out, int cap, int *n_out) {
    if (!t || (!text && len) || !n_out || cap < 0 || (cap && !out))
        return nano_set_error(NANO_ERR_INVALID_ARG, "nano_tokenize: bad argument");
    tok_ids ids = {0};
    if ((add_bos < 0 ? t->add_bos : add_bos) && t->bos_id >= 0) tok_ids_push(&ids, t->bos_id);
    int st = tok_encode(t, text ? text : "", len, special, &ids);
    if (st == NANO_OK && ids.n > (size_t)INT32_MAX) st = nano_set_error(NANO_ERR_INVALID_ARG, "text too long");
    if (st == NANO_OK) {
        *n_out = (int)ids.n;
        size_t k = ids.n < (size_t)cap ? ids.n : (size_t)cap;
        if (k) memcpy(out, ids.v, k * sizeof *out);
    }
    free(ids.v);
    return st;
}
