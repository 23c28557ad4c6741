/* json.c - see json.h. Strict RFC 8259 subset: no comments, no trailing commas. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    json_doc *d;
    size_t pos;
} parser;

static int fail(parser *p, const char *what) {
    snprintf(p->d->err, sizeof p->d->err, "JSON: %s at byte %zu", what, p->pos);
    return -1;
}

static void skip_ws(parser *p) {
    const char *s = p->d->src;
    while (p->pos < p->d->len &&
           (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\n' || s[p->pos] == '\r'))
        p->pos++;
}

static int32_t new_node(parser *p, json_type t) {
    json_doc *d = p->d;
    if (d->n_nodes == d->cap) {
        int32_t cap = d->cap ? d->cap * 2 : 64;
        if (cap > (1 << 26)) return -1;
        json_node *nn = realloc(d->nodes, (size_t)cap * sizeof *nn);
        if (!nn) return -1;
        d->nodes = nn;
        d->cap = cap;
    }
    json_node *n = &d->nodes[d->n_nodes];
    memset(n, 0, sizeof *n);
    n->type = t;
    n->first_child = n->next = n->value = -1;
    n->start = p->pos;
    return d->n_nodes++;
}

static int parse_value(parser *p, int depth, int32_t *out);

static int parse_string(parser *p, int32_t *out) {
    const char *s = p->d->src;
    size_t len = p->d->len;
    if (p->pos >= len || s[p->pos] != '"') return fail(p, "expected a string");
    p->pos++;
    int32_t id = new_node(p, JSON_STRING);
    if (id < 0) return fail(p, "out of memory");
    p->d->nodes[id].start = p->pos;
    while (p->pos < len) {
        unsigned char c = (unsigned char)s[p->pos];
        if (c == '"') {
            p->d->nodes[id].end = p->pos;
            p->pos++;
            *out = id;
            return 0;
        }
        if (c < 0x20) return fail(p, "control character in string");
        if (c == '\\') {
            if (p->pos + 1 >= len) break;
            char e = s[p->pos + 1];
            if (e == 'u') {
                if (p->pos + 6 > len) break;
                for (int i = 2; i < 6; i++) {
                    char h = s[p->pos + i];
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F')))
                        return fail(p, "bad \\u escape");
                }
                p->pos += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0) return fail(p, "bad escape");
            p->pos += 2;
            continue;
        }
        p->pos++;
    }
    return fail(p, "unterminated string");
}

static int parse_number(parser *p, int32_t *out) {
    const char *s = p->d->src;
    size_t len = p->d->len, b = p->pos;
    if (p->pos < len && s[p->pos] == '-') p->pos++;
    size_t digits = 0;
    while (p->pos < len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++, digits++;
    if (!digits) return fail(p, "bad number");
    if (p->pos < len && s[p->pos] == '.') {
        p->pos++;
        digits = 0;
        while (p->pos < len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++, digits++;
        if (!digits) return fail(p, "bad number");
    }
    if (p->pos < len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        digits = 0;
        while (p->pos < len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++, digits++;
        if (!digits) return fail(p, "bad number");
    }
    if (p->pos - b > 64) return fail(p, "number too long");
    size_t save = p->pos;
    p->pos = b;
    int32_t id = new_node(p, JSON_NUMBER);
    p->pos = save;
    if (id < 0) return fail(p, "out of memory");
    p->d->nodes[id].start = b;
    p->d->nodes[id].end = p->pos;
    *out = id;
    return 0;
}

static int parse_literal(parser *p, const char *word, json_type t, int b, int32_t *out) {
    size_t n = strlen(word);
    if (p->d->len - p->pos < n || memcmp(p->d->src + p->pos, word, n) != 0)
        return fail(p, "unexpected character");
    int32_t id = new_node(p, t);
    if (id < 0) return fail(p, "out of memory");
    p->d->nodes[id].boolean = b;
    p->pos += n;
    p->d->nodes[id].end = p->pos;
    *out = id;
    return 0;
}

static int parse_container(parser *p, int depth, int32_t *out, int is_obj) {
    if (depth >= JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    int32_t id = new_node(p, is_obj ? JSON_OBJECT : JSON_ARRAY);
    if (id < 0) return fail(p, "out of memory");
    p->pos++; /* '{' or '[' */
    char close = is_obj ? '}' : ']';
    int32_t last = -1;
    skip_ws(p);
    if (p->pos < p->d->len && p->d->src[p->pos] == close) {
        p->pos++;
        p->d->nodes[id].end = p->pos;
        *out = id;
        return 0;
    }
    for (;;) {
        int32_t child;
        skip_ws(p);
        if (is_obj) {
            int32_t val;
            if (parse_string(p, &child)) return -1;
            skip_ws(p);
            if (p->pos >= p->d->len || p->d->src[p->pos] != ':') return fail(p, "expected ':'");
            p->pos++;
            if (parse_value(p, depth + 1, &val)) return -1;
            p->d->nodes[child].value = val;
        } else {
            if (parse_value(p, depth + 1, &child)) return -1;
        }
        if (last < 0) p->d->nodes[id].first_child = child;
        else p->d->nodes[last].next = child;
        last = child;
        p->d->nodes[id].count++;
        skip_ws(p);
        if (p->pos >= p->d->len) return fail(p, "unterminated container");
        char c = p->d->src[p->pos];
        if (c == ',') { p->pos++; continue; }
        if (c == close) { p->pos++; break; }
        return fail(p, "expected ',' or end of container");
    }
    p->d->nodes[id].end = p->pos;
    *out = id;
    return 0;
}

static int parse_value(parser *p, int depth, int32_t *out) {
    skip_ws(p);
    if (p->pos >= p->d->len) return fail(p, "unexpected end");
    char c = p->d->src[p->pos];
    switch (c) {
    case '{': return parse_container(p, depth, out, 1);
    case '[': return parse_container(p, depth, out, 0);
    case '"': return parse_string(p, out);
    case 't': return parse_literal(p, "true", JSON_BOOL, 1, out);
    case 'f': return parse_literal(p, "false", JSON_BOOL, 0, out);
    case 'n': return parse_literal(p, "null", JSON_NULL, 0, out);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, out);
        return fail(p, "unexpected character");
    }
}

int json_parse(json_doc *doc, const char *src, size_t len) {
    memset(doc, 0, sizeof *doc);
    doc->src = src;
    doc->len = len;
    parser p = {doc, 0};
    int32_t root;
    if (parse_value(&p, 0, &root)) goto bad;
    skip_ws(&p);
    if (p.pos != len) {
        fail(&p, "trailing characters");
        goto bad;
    }
    return 0;
bad:
    free(doc->nodes);
    doc->nodes = NULL;
    doc->n_nodes = doc->cap = 0;
    return -1;
}

void json_free(json_doc *doc) {
    if (!doc) return;
    free(doc->nodes);
    doc->nodes = NULL;
    doc->n_nodes = doc->cap = 0;
}

int json_str_eq(const json_doc *doc, int32_t node, const char *s) {
    if (node < 0 || node >= doc->n_nodes || doc->nodes[node].type != JSON_STRING) return 0;
    const json_node *n = &doc->nodes[node];
    size_t l = strlen(s);
    return n->end - n->start == l && memcmp(doc->src + n->start, s, l) == 0;
}

int32_t json_get(const json_doc *doc, int32_t obj, const char *key) {
    if (obj < 0 || obj >= doc->n_nodes || doc->nodes[obj].type != JSON_OBJECT) return -1;
    for (int32_t k = doc->nodes[obj].first_child; k >= 0; k = doc->nodes[k].next)
        if (json_str_eq(doc, k, key)) return doc->nodes[k].value;
    return -1;
}

static int hexval(char h) {
    if (h >= '0' && h <= '9') return h - '0';
    if (h >= 'a' && h <= 'f') return h - 'a' + 10;
    return h - 'A' + 10;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

char *json_str_dup(const json_doc *doc, int32_t node, size_t *out_len) {
    if (node < 0 || node >= doc->n_nodes || doc->nodes[node].type != JSON_STRING) return NULL;
    const json_node *n = &doc->nodes[node];
    const char *s = doc->src;
    /* escaped text never grows when unescaped (\uXXXX: 6 bytes -> <= 3, pairs 12 -> 4) */
    char *out = malloc(n->end - n->start + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = n->start; i < n->end;) {
        if (s[i] != '\\') { out[o++] = s[i++]; continue; }
        char e = s[i + 1]; /* validated by the parser: escape is complete */
        if (e == 'u') {
            uint32_t cp = 0;
            for (int k = 2; k < 6; k++) cp = cp * 16 + (uint32_t)hexval(s[i + k]);
            i += 6;
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= n->end && s[i] == '\\' && s[i + 1] == 'u') {
                uint32_t lo = 0;
                for (int k = 2; k < 6; k++) lo = lo * 16 + (uint32_t)hexval(s[i + k]);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD; /* lone surrogate */
            o += put_utf8(out + o, cp);
            continue;
        }
        char c = e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r'
               : e == 't' ? '\t' : e;
        out[o++] = c;
        i += 2;
    }
    out[o] = 0;
    if (out_len) *out_len = o;
    return out;
}

int json_num(const json_doc *doc, int32_t node, double *out) {
    if (node < 0 || node >= doc->n_nodes || doc->nodes[node].type != JSON_NUMBER) return -1;
    const json_node *n = &doc->nodes[node];
    char buf[72];
    size_t l = n->end - n->start;
    if (l >= sizeof buf) return -1;
    memcpy(buf, doc->src + n->start, l);
    buf[l] = 0;
    errno = 0;
    char *endp;
    double v = strtod(buf, &endp);
    if (endp != buf + l || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int json_int(const json_doc *doc, int32_t node, int64_t *out) {
    double v;
    if (json_num(doc, node, &v)) return -1;
    if (v != floor(v) || v < -9.0e15 || v > 9.0e15) return -1;
    *out = (int64_t)v;
    return 0;
}
