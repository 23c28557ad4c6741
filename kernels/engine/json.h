/* json.h - a small, bounds-checked JSON parser for the safetensors header and
 * the config strings inside it. The input may be hostile: every read is
 * checked against the end of the buffer, nesting depth is limited and the
 * node count is bounded by the input length. No recursion on untrusted depth
 * beyond JSON_MAX_DEPTH.
 *
 * The parse produces a flat array of nodes; containers link their children
 * through first_child / next (indices, -1 = none). Strings and numbers are
 * spans [start, end) into the input (strings without their quotes, still escaped).
 */
#ifndef NANO_ENGINE_JSON_H
#define NANO_ENGINE_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 32

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct {
    json_type type;
    int32_t first_child; /* array elements / object keys (a key's value is key.next... see below) */
    int32_t next;        /* next sibling                                                       */
    int32_t value;       /* for an object key (a STRING node): index of its value               */
    int32_t count;       /* children (elements, or key/value pairs)                             */
    size_t start, end;   /* span in the input                                                   */
    int boolean;
} json_node;

typedef struct {
    const char *src;
    size_t len;
    json_node *nodes;
    int32_t n_nodes, cap;
    char err[160];
} json_doc;

/* Parse src[0..len). 0 on success; -1 with doc->err set (and nodes freed). */
int json_parse(json_doc *doc, const char *src, size_t len);
void json_free(json_doc *doc);

/* Value node of key `key` in object node `obj`, or -1. */
int32_t json_get(const json_doc *doc, int32_t obj, const char *key);
/* Compare a STRING node to a C string (exact, after unescaping simple cases: keys must not use escapes). */
int json_str_eq(const json_doc *doc, int32_t node, const char *s);
/* Unescape a STRING node into a new malloc'd NUL-terminated buffer (UTF-8); NULL on error. */
char *json_str_dup(const json_doc *doc, int32_t node, size_t *out_len);
/* Number node -> double / int64 (0 on success, -1 if not a number or out of range). */
int json_num(const json_doc *doc, int32_t node, double *out);
int json_int(const json_doc *doc, int32_t node, int64_t *out);

#endif
