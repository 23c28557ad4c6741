/* tok_json.c - a streaming JSON cursor for tokenizer.json and the tokenizer
 * config. No tree is built: the caller walks objects and arrays and reads the
 * values it needs, skipping the rest. The input may be hostile: every read is
 * bounds-checked, nesting is limited, the first error sticks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define TJ_MAX_DEPTH 64

void tj_init(tj_cur *c, const char *s, size_t n) {
    memset(c, 0, sizeof *c);
    c->p = c->start = s;
    c->end = s + n;
}

void tj_free(tj_cur *c) {
    free(c->buf);
    c->buf = NULL;
    c->cap = c->len = 0;
}

int tj_fail(tj_cur *c, const char *what) {
    if (!c->err[0])
        snprintf(c->err, sizeof c->err, "%s (at byte %ld)", what, (long)(c->p - c->start));
    c->p = c->end;
    return -1;
}

int tj_peek(tj_cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
    return c->p < c->end && !c->err[0] ? (unsigned char)*c->p : 0;
}

static int expect(tj_cur *c, char ch) {
    if (tj_peek(c) != (unsigned char)ch) {
        char m[32];
        snprintf(m, sizeof m, "expected '%c'", ch);
        return tj_fail(c, m);
    }
    c->p++;
    return 0;
}

static int buf_put(tj_cur *c, const char *s, size_t n) {
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        while (cap < c->len + n + 1) cap *= 2;
        char *b = realloc(c->buf, cap);
        if (!b) return tj_fail(c, "out of memory");
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, s, n);
    c->len += n;
    c->buf[c->len] = 0;
    return 0;
}

static int hex4(tj_cur *c, uint32_t *v) {
    if (c->end - c->p < 4) return tj_fail(c, "truncated \\u escape");
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        char h = c->p[i];
        x <<= 4;
        if (h >= '0' && h <= '9') x |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f') x |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') x |= (uint32_t)(h - 'A' + 10);
        else return tj_fail(c, "bad \\u escape");
    }
    c->p += 4;
    *v = x;
    return 0;
}

int tj_string(tj_cur *c) {
    c->len = 0;
    if (buf_put(c, "", 0) || expect(c, '"')) return -1;
    for (;;) {
        const char *s = c->p;
        while (c->p < c->end && *c->p != '"' && *c->p != '\\') c->p++;
        if (c->p >= c->end) return tj_fail(c, "unterminated string");
        if (c->p > s && buf_put(c, s, (size_t)(c->p - s))) return -1;
        if (*c->p == '"') { c->p++; return 0; }
        c->p++; /* backslash */
        if (c->p >= c->end) return tj_fail(c, "unterminated string");
        char e = *c->p++, o;
        switch (e) {
        case '"': o = '"'; break;
        case '\\': o = '\\'; break;
        case '/': o = '/'; break;
        case 'b': o = '\b'; break;
        case 'f': o = '\f'; break;
        case 'n': o = '\n'; break;
        case 'r': o = '\r'; break;
        case 't': o = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(c, &cp)) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF && c->end - c->p >= 6 && c->p[0] == '\\' &&
                c->p[1] == 'u') {
                const char *save = c->p;
                c->p += 2;
                if (hex4(c, &lo)) return -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else c->p = save;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* lone surrogate */
            char u[4];
            if (buf_put(c, u, (size_t)tok_utf8_put(cp, u))) return -1;
            continue;
        }
        default: return tj_fail(c, "bad escape");
        }
        if (buf_put(c, &o, 1)) return -1;
    }
}

int tj_int(tj_cur *c, int64_t *v) {
    tj_peek(c);
    const char *s = c->p;
    int neg = 0;
    if (c->p < c->end && *c->p == '-') { neg = 1; c->p++; }
    int64_t x = 0;
    int nd = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (x > (INT64_MAX - 9) / 10) return tj_fail(c, "integer out of range");
        x = x * 10 + (*c->p++ - '0');
        nd++;
    }
    if (!nd) { c->p = s; return tj_fail(c, "expected an integer"); }
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
        return tj_fail(c, "expected an integer");
    *v = neg ? -x : x;
    return 0;
}

static int word(tj_cur *c, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return 0;
    c->p += n;
    return 1;
}

int tj_bool(tj_cur *c, int *v) {
    tj_peek(c);
    if (word(c, "true")) { *v = 1; return 0; }
    if (word(c, "false")) { *v = 0; return 0; }
    return tj_fail(c, "expected true or false");
}

int tj_null(tj_cur *c) {
    tj_peek(c);
    return word(c, "null");
}

int tj_obj_begin(tj_cur *c) {
    if (c->depth + 1 >= TJ_MAX_DEPTH) return tj_fail(c, "nesting too deep");
    if (expect(c, '{')) return -1;
    c->first[++c->depth] = 1;
    return 0;
}

/* The next member / element of the innermost container: 1, 0 at its end, -1. */
static int next_item(tj_cur *c, char close) {
    int ch = tj_peek(c);
    if (ch == (unsigned char)close) { c->p++; c->depth--; return 0; }
    if (c->first[c->depth]) c->first[c->depth] = 0;
    else if (ch != ',') return tj_fail(c, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    else c->p++;
    return 1;
}

int tj_obj_key(tj_cur *c) {
    int r = next_item(c, '}');
    if (r != 1) return r;
    if (tj_string(c) || expect(c, ':')) return -1;
    return 1;
}

int tj_arr_begin(tj_cur *c) {
    if (c->depth + 1 >= TJ_MAX_DEPTH) return tj_fail(c, "nesting too deep");
    if (expect(c, '[')) return -1;
    c->first[++c->depth] = 1;
    return 0;
}

int tj_arr_next(tj_cur *c) { return next_item(c, ']'); }

int tj_skip(tj_cur *c) {
    int ch = tj_peek(c), r;
    if (ch == '"') return tj_string(c);
    if (ch == '{') {
        if (tj_obj_begin(c)) return -1;
        while ((r = tj_obj_key(c)) == 1)
            if (tj_skip(c)) return -1;
        return r;
    }
    if (ch == '[') {
        if (tj_arr_begin(c)) return -1;
        while ((r = tj_arr_next(c)) == 1)
            if (tj_skip(c)) return -1;
        return r;
    }
    if (word(c, "true") || word(c, "false") || word(c, "null")) return 0;
    const char *s = c->p;
    while (c->p < c->end && strchr("+-0123456789.eE", *c->p)) c->p++;
    if (c->p == s) return tj_fail(c, "unexpected character");
    return 0;
}
