/* model_load.c - open a .nano file: mmap, parse the safetensors header with a
 * bounds-checked parser, read "nano.config", and bind every tensor the config
 * needs (checking dtype, shape and that its bytes lie inside the file).
 * The file may be truncated, corrupt or hostile: every failure is a status
 * with a message naming the tensor or field, never a crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine_internal.h"
#include "json.h"

#define MAX_HEADER_BYTES (256u << 20)

/* ---- small helpers -------------------------------------------------------- */
static int own(nano_model *m, void *p) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o) return -1;
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

static const struct { const char *name; int id, size; } DTYPES[] = {
    {"U8", ST_U8, 1}, {"I8", ST_I8, 1}, {"F16", ST_F16, 2}, {"F32", ST_F32, 4},
    {"BF16", ST_BF16, 2}, {"I32", ST_I32, 4}, {"I64", ST_I64, 8}, {"F64", ST_F64, 8},
    {"BOOL", ST_BOOL, 1}, {"I16", ST_I16, 2}, {"U16", ST_U16, 2},
};

static int dtype_size(int id) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].id == id) return DTYPES[i].size;
    return 0;
}

static const char *dtype_name(int id) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].id == id) return DTYPES[i].name;
    return "?";
}

/* ---- config --------------------------------------------------------------- */
static int cfg_int(const json_doc *d, int32_t root, const char *key, int lo, int hi, int dflt,
                   int *out, char *err, size_t errlen) {
    int32_t v = json_get(d, root, key);
    if (v < 0) {
        if (dflt == INT32_MIN) {
            snprintf(err, errlen, "nano.config: missing field %s", key);
            return -1;
        }
        *out = dflt;
        return 0;
    }
    int64_t x;
    if (json_int(d, v, &x) || x < lo || x > hi) {
        snprintf(err, errlen, "nano.config: %s must be an integer in [%d, %d]", key, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int cfg_float(const json_doc *d, int32_t root, const char *key, double lo, double hi,
                     double dflt, float *out, char *err, size_t errlen) {
    int32_t v = json_get(d, root, key);
    double x = dflt;
    if (v >= 0 && (json_num(d, v, &x) || !(x >= lo && x <= hi))) {
        snprintf(err, errlen, "nano.config: %s must be a number in [%g, %g]", key, lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int cfg_bool(const json_doc *d, int32_t root, const char *key, int *out, char *err,
                    size_t errlen) {
    int32_t v = json_get(d, root, key);
    *out = 0;
    if (v < 0) return 0;
    if (d->nodes[v].type != JSON_BOOL) {
        snprintf(err, errlen, "nano.config: %s must be true or false", key);
        return -1;
    }
    *out = d->nodes[v].boolean;
    return 0;
}

int nano_config_from_json(const char *json, size_t len, nano_config *c, char *err,
                          size_t errlen) {
    json_doc d;
    memset(c, 0, sizeof *c);
    if (json_parse(&d, json, len)) {
        snprintf(err, errlen, "nano.config: %s", d.err);
        return -1;
    }
    int rc = -1;
    int32_t r = 0;
    if (d.nodes[0].type != JSON_OBJECT) {
        snprintf(err, errlen, "nano.config: not a JSON object");
        goto out;
    }
    int32_t fam = json_get(&d, r, "family");
    if (json_str_eq(&d, fam, "llama")) c->family = NANO_FAMILY_LLAMA;
    else if (json_str_eq(&d, fam, "gemma3")) c->family = NANO_FAMILY_GEMMA3;
    else {
        snprintf(err, errlen, "nano.config: family must be \"llama\" or \"gemma3\"");
        goto out;
    }
    int32_t act = json_get(&d, r, "activation");
    if (json_str_eq(&d, act, "silu")) c->gelu = 0;
    else if (json_str_eq(&d, act, "gelu_tanh")) c->gelu = 1;
    else {
        snprintf(err, errlen, "nano.config: activation must be \"silu\" or \"gelu_tanh\"");
        goto out;
    }
    const int M = INT32_MIN;
    if (cfg_int(&d, r, "vocab_size", 1, 4 << 20, M, &c->vocab_size, err, errlen) ||
        cfg_int(&d, r, "dim", 32, 65536, M, &c->dim, err, errlen) ||
        cfg_int(&d, r, "n_layers", 1, 1024, M, &c->n_layers, err, errlen) ||
        cfg_int(&d, r, "n_heads", 1, 1024, M, &c->n_heads, err, errlen) ||
        cfg_int(&d, r, "n_kv_heads", 1, 1024, M, &c->n_kv_heads, err, errlen) ||
        cfg_int(&d, r, "head_dim", 0, 4096, 0, &c->head_dim, err, errlen) ||
        cfg_int(&d, r, "hidden_dim", 32, 1 << 20, M, &c->hidden_dim, err, errlen) ||
        cfg_int(&d, r, "max_seq_len", 1, 1 << 22, M, &c->max_seq_len, err, errlen) ||
        cfg_int(&d, r, "sliding_window", 0, 1 << 22, 0, &c->sliding_window, err, errlen) ||
        cfg_int(&d, r, "sliding_window_pattern", 1, 1024, 6, &c->sliding_window_pattern, err,
                errlen) ||
        cfg_float(&d, r, "norm_eps", 1e-12, 1.0, 1e-5, &c->norm_eps, err, errlen) ||
        cfg_float(&d, r, "rope_theta", 1.0, 1e12, 10000.0, &c->rope_theta, err, errlen) ||
        cfg_float(&d, r, "rope_theta_local", 1.0, 1e12, 10000.0, &c->rope_theta_local, err,
                  errlen) ||
        cfg_float(&d, r, "query_pre_attn_scalar", 0.0, 1e9, 0.0, &c->query_pre_attn_scalar,
                  err, errlen) ||
        cfg_bool(&d, r, "tie_embeddings", &c->tie_embeddings, err, errlen) ||
        cfg_bool(&d, r, "qk_norm", &c->qk_norm, err, errlen) ||
        cfg_bool(&d, r, "post_norms", &c->post_norms, err, errlen) ||
        cfg_bool(&d, r, "embed_scale", &c->embed_scale, err, errlen))
        goto out;
    if (c->head_dim == 0) c->head_dim = c->dim / c->n_heads;
    if (c->query_pre_attn_scalar == 0) c->query_pre_attn_scalar = (float)c->head_dim;
    if (c->head_dim < 2 || c->head_dim % 2) {
        snprintf(err, errlen, "nano.config: head_dim must be even and >= 2");
        goto out;
    }
    if (c->n_heads % c->n_kv_heads) {
        snprintf(err, errlen, "nano.config: n_kv_heads must divide n_heads");
        goto out;
    }
    if (c->dim % NANO_QK || c->hidden_dim % NANO_QK || (c->n_heads * c->head_dim) % NANO_QK) {
        snprintf(err, errlen, "nano.config: dim, hidden_dim and n_heads*head_dim must be "
                              "multiples of 32");
        goto out;
    }
    if ((int64_t)c->n_heads * c->head_dim > 1 << 20) {
        snprintf(err, errlen, "nano.config: n_heads*head_dim too large");
        goto out;
    }
    rc = 0;
out:
    json_free(&d);
    return rc;
}

/* ---- tensors -------------------------------------------------------------- */
static st_tensor *find(nano_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* The tensor `name` with this dtype and 1- or 2-D shape (d1 < 0: 1-D). */
static int want(nano_model *m, const char *name, int dtype, int64_t d0, int64_t d1,
                st_tensor **out) {
    st_tensor *t = find(m, name);
    if (!t) return nano_set_error(NANO_ERR_FORMAT, "missing tensor %s", name);
    if (t->dtype != dtype)
        return nano_set_error(NANO_ERR_FORMAT, "tensor %s has dtype %s, expected %s", name,
                              dtype_name(t->dtype), dtype_name(dtype));
    int ok = d1 < 0 ? (t->ndim == 1 && t->shape[0] == d0)
                    : (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1);
    if (!ok) {
        if (d1 < 0)
            return nano_set_error(NANO_ERR_FORMAT, "tensor %s has the wrong shape (expected [%lld])",
                                  name, (long long)d0);
        return nano_set_error(NANO_ERR_FORMAT,
                              "tensor %s has the wrong shape (expected [%lld, %lld])", name,
                              (long long)d0, (long long)d1);
    }
    t->used = 1;
    *out = t;
    return NANO_OK;
}

/* Pointer to the tensor data with `align` alignment (copied if the file's is not). */
static const void *aligned_data(nano_model *m, st_tensor *t, size_t align) {
    if (((uintptr_t)t->data % align) == 0) return t->data;
    void *p = NULL;
    if (posix_memalign(&p, 64, t->nbytes ? t->nbytes : 1) || !p) return NULL;
    memcpy(p, t->data, t->nbytes);
    if (own(m, p)) { free(p); return NULL; }
    return p;
}

/* A norm vector [n] as fp32 (converted from fp16 if needed). */
static int bind_vec(nano_model *m, const char *name, int n, const float **out) {
    st_tensor *t = find(m, name);
    if (!t) return nano_set_error(NANO_ERR_FORMAT, "missing tensor %s", name);
    if (t->ndim != 1 || t->shape[0] != n)
        return nano_set_error(NANO_ERR_FORMAT, "tensor %s has the wrong shape (expected [%d])",
                              name, n);
    t->used = 1;
    if (t->dtype == ST_F32) {
        *out = aligned_data(m, t, 4);
    } else if (t->dtype == ST_F16) {
        float *p = malloc((size_t)n * sizeof *p);
        if (!p || own(m, p)) { free(p); return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); }
        for (int i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * (size_t)i, 2);
            p[i] = nano_fp16_to_fp32(h);
        }
        *out = p;
    } else {
        return nano_set_error(NANO_ERR_FORMAT, "tensor %s has dtype %s, expected F32 or F16",
                              name, dtype_name(t->dtype));
    }
    if (!*out) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < n; i++)
        if (!isfinite((*out)[i]))
            return nano_set_error(NANO_ERR_FORMAT, "tensor %s holds a non-finite value", name);
    return NANO_OK;
}

/* Bind linear weight P ([n, k]) in whichever form the file stores it. */
static int bind_linear(nano_model *m, const char *prefix, int n, int k, nano_linear *w) {
    char name[256], sname[256], mname[256];
    st_tensor *q, *s, *mn;
    int rc;
    memset(w, 0, sizeof *w);
    w->n = n;
    w->k = k;
    snprintf(sname, sizeof sname, "%s.scales", prefix);
    snprintf(name, sizeof name, "%s.qweight", prefix);
    if (find(m, name)) {
        if (k % NANO_QK)
            return nano_set_error(NANO_ERR_FORMAT, "tensor %s: K=%d is not a multiple of 32", name, k);
        if ((rc = want(m, name, ST_U8, n, k / 2, &q))) return rc;
        st_tensor *st = find(m, sname);
        if (!st || st->ndim != 2 || st->shape[0] != n || st->shape[1] < 1)
            return nano_set_error(NANO_ERR_FORMAT, "missing or misshaped tensor %s", sname);
        int64_t ng = st->shape[1];
        int g = 0;
        for (int cand = 32; cand <= 128; cand *= 2)
            if ((k + cand - 1) / cand == ng) { g = cand; break; }
        if (!g)
            return nano_set_error(NANO_ERR_FORMAT, "tensor %s: %lld groups for K=%d is not a "
                                  "group size of 32, 64 or 128", sname, (long long)ng, k);
        if ((rc = want(m, sname, ST_F16, n, ng, &s))) return rc;
        w->type = LIN_Q4;
        w->q4.qweight = q->data;
        w->q4.scales = aligned_data(m, s, 2);
        snprintf(mname, sizeof mname, "%s.mins", prefix);
        if (find(m, mname)) {
            if ((rc = want(m, mname, ST_F16, n, ng, &mn))) return rc;
            w->q4.mins = aligned_data(m, mn, 2);
            if (!w->q4.mins) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
        }
        if (!w->q4.scales) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
        w->q4.n = n;
        w->q4.k = k;
        w->q4.group_size = g;
        return NANO_OK;
    }
    snprintf(name, sizeof name, "%s.qweight8", prefix);
    if (find(m, name)) {
        if (k % NANO_Q8_GROUP)
            return nano_set_error(NANO_ERR_FORMAT, "tensor %s: K=%d is not a multiple of 32", name, k);
        if ((rc = want(m, name, ST_I8, n, k, &q))) return rc;
        if ((rc = want(m, sname, ST_F16, n, k / NANO_Q8_GROUP, &s))) return rc;
        w->type = LIN_Q8;
        w->q8.qweight = (const int8_t *)q->data;
        w->q8.scales = aligned_data(m, s, 2);
        if (!w->q8.scales) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
        w->q8.n = n;
        w->q8.k = k;
        return NANO_OK;
    }
    snprintf(name, sizeof name, "%s.weight", prefix);
    st_tensor *t = find(m, name);
    if (t) {
        int dt = t->dtype == ST_F16 ? ST_F16 : ST_F32;
        if ((rc = want(m, name, dt, n, k, &t))) return rc;
        w->type = dt == ST_F16 ? LIN_F16 : LIN_F32;
        w->plain = aligned_data(m, t, dt == ST_F16 ? 2 : 4);
        if (!w->plain) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
        return NANO_OK;
    }
    return nano_set_error(NANO_ERR_FORMAT, "missing tensor %s.qweight (or .qweight8 / .weight)",
                          prefix);
}

static int bind_weights(nano_model *m) {
    const nano_config *c = &m->cfg;
    int rc, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    char p[128], n2[160];
    if ((rc = bind_linear(m, "embed", c->vocab_size, c->dim, &m->embed))) return rc;
    if (c->tie_embeddings) m->head = m->embed;
    else if ((rc = bind_linear(m, "output", c->vocab_size, c->dim, &m->head))) return rc;
    if ((rc = bind_vec(m, "norm.weight", c->dim, &m->final_norm))) return rc;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < c->n_layers; i++) {
        nano_layer *L = &m->layers[i];
        struct { const char *suffix; int n, k; nano_linear *w; } lins[] = {
            {"attn.wq", qd, c->dim, &L->wq}, {"attn.wk", kvd, c->dim, &L->wk},
            {"attn.wv", kvd, c->dim, &L->wv}, {"attn.wo", c->dim, qd, &L->wo},
            {"mlp.w_gate", c->hidden_dim, c->dim, &L->w_gate},
            {"mlp.w_up", c->hidden_dim, c->dim, &L->w_up},
            {"mlp.w_down", c->dim, c->hidden_dim, &L->w_down},
        };
        for (size_t j = 0; j < sizeof lins / sizeof lins[0]; j++) {
            snprintf(p, sizeof p, "layers.%d.%s", i, lins[j].suffix);
            if ((rc = bind_linear(m, p, lins[j].n, lins[j].k, lins[j].w))) return rc;
        }
        struct { const char *suffix; int n; const float **v; int on; } vecs[] = {
            {"attn_norm", c->dim, &L->attn_norm, 1}, {"mlp_norm", c->dim, &L->mlp_norm, 1},
            {"post_attn_norm", c->dim, &L->post_attn_norm, c->post_norms},
            {"post_mlp_norm", c->dim, &L->post_mlp_norm, c->post_norms},
            {"attn.q_norm", c->head_dim, &L->q_norm, c->qk_norm},
            {"attn.k_norm", c->head_dim, &L->k_norm, c->qk_norm},
        };
        for (size_t j = 0; j < sizeof vecs / sizeof vecs[0]; j++) {
            if (!vecs[j].on) continue;
            snprintf(n2, sizeof n2, "layers.%d.%s.weight", i, vecs[j].suffix);
            if ((rc = bind_vec(m, n2, vecs[j].n, vecs[j].v))) return rc;
        }
        int global = nano_layer_is_global(c, i);
        L->window = global ? 0 : c->sliding_window;
        L->theta = global ? c->rope_theta : c->rope_theta_local;
    }
    for (int i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].used && strncmp(m->tensors[i].name, "tokenizer.", 10) != 0)
            return nano_set_error(NANO_ERR_FORMAT, "unexpected tensor %s for this config",
                                  m->tensors[i].name);
    return NANO_OK;
}

/* ---- header --------------------------------------------------------------- */
static int parse_header(nano_model *m) {
    if (m->map_bytes < 8) return nano_set_error(NANO_ERR_FORMAT, "file too short (%zu bytes)", m->map_bytes);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | m->map[i];
    if (hlen < 2 || hlen > MAX_HEADER_BYTES || hlen > m->map_bytes - 8)
        return nano_set_error(NANO_ERR_FORMAT, "bad header length %llu (file has %zu bytes): "
                              "not a .nano/safetensors file or truncated",
                              (unsigned long long)hlen, m->map_bytes);
    const char *h = (const char *)m->map + 8;
    const uint8_t *data = m->map + 8 + hlen;
    size_t data_bytes = m->map_bytes - 8 - hlen;
    json_doc d;
    if (json_parse(&d, h, hlen))
        return nano_set_error(NANO_ERR_FORMAT, "malformed header: %s", d.err);
    int rc = NANO_OK;
    if (d.nodes[0].type != JSON_OBJECT) {
        rc = nano_set_error(NANO_ERR_FORMAT, "malformed header: not a JSON object");
        goto out;
    }
    int n = d.nodes[0].count;
    m->tensors = calloc((size_t)n + 1, sizeof *m->tensors);
    if (!m->tensors) { rc = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); goto out; }
    for (int32_t k = d.nodes[0].first_child; k >= 0; k = d.nodes[k].next) {
        int32_t v = d.nodes[k].value;
        char *name = json_str_dup(&d, k, NULL);
        if (!name) { rc = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); goto out; }
        if (strcmp(name, "__metadata__") == 0) {
            free(name);
            if (d.nodes[v].type != JSON_OBJECT) {
                rc = nano_set_error(NANO_ERR_FORMAT, "__metadata__ is not an object");
                goto out;
            }
            m->meta = calloc((size_t)d.nodes[v].count + 1, sizeof *m->meta);
            if (!m->meta) { rc = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); goto out; }
            for (int32_t mk = d.nodes[v].first_child; mk >= 0; mk = d.nodes[mk].next) {
                int32_t mv = d.nodes[mk].value;
                if (d.nodes[mv].type != JSON_STRING) {
                    rc = nano_set_error(NANO_ERR_FORMAT, "__metadata__ values must be strings");
                    goto out;
                }
                st_meta *e = &m->meta[m->n_meta++];
                e->key = json_str_dup(&d, mk, NULL);
                e->value = json_str_dup(&d, mv, NULL);
                if (!e->key || !e->value) { rc = nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); goto out; }
            }
            continue;
        }
        st_tensor *t = &m->tensors[m->n_tensors++];
        t->name = name;
        if (d.nodes[v].type != JSON_OBJECT) {
            rc = nano_set_error(NANO_ERR_FORMAT, "header entry %s is not an object", name);
            goto out;
        }
        int32_t dt = json_get(&d, v, "dtype"), sh = json_get(&d, v, "shape"),
                of = json_get(&d, v, "data_offsets");
        for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
            if (json_str_eq(&d, dt, DTYPES[i].name)) t->dtype = DTYPES[i].id;
        if (!t->dtype) { rc = nano_set_error(NANO_ERR_FORMAT, "tensor %s: missing or unknown dtype", name); goto out; }
        if (sh < 0 || d.nodes[sh].type != JSON_ARRAY || d.nodes[sh].count > 4) {
            rc = nano_set_error(NANO_ERR_FORMAT, "tensor %s: bad shape", name);
            goto out;
        }
        uint64_t numel = 1;
        for (int32_t e = d.nodes[sh].first_child; e >= 0; e = d.nodes[e].next) {
            int64_t x;
            if (json_int(&d, e, &x) || x < 0 || x > (1LL << 40)) {
                rc = nano_set_error(NANO_ERR_FORMAT, "tensor %s: bad shape", name);
                goto out;
            }
            t->shape[t->ndim++] = x;
            numel *= (uint64_t)x;
            if (numel > (1ULL << 42)) { rc = nano_set_error(NANO_ERR_FORMAT, "tensor %s: shape too large", name); goto out; }
        }
        int64_t a, b;
        if (of < 0 || d.nodes[of].type != JSON_ARRAY || d.nodes[of].count != 2 ||
            json_int(&d, d.nodes[of].first_child, &a) ||
            json_int(&d, d.nodes[d.nodes[of].first_child].next, &b) || a < 0 || b < a) {
            rc = nano_set_error(NANO_ERR_FORMAT, "tensor %s: bad data_offsets", name);
            goto out;
        }
        if ((uint64_t)b > data_bytes) {
            rc = nano_set_error(NANO_ERR_FORMAT, "tensor %s: data ends at byte %lld past the end "
                                "of the file (truncated?)", name, (long long)b);
            goto out;
        }
        if ((uint64_t)(b - a) != numel * (uint64_t)dtype_size(t->dtype)) {
            rc = nano_set_error(NANO_ERR_FORMAT, "tensor %s: %lld bytes do not match its shape",
                                name, (long long)(b - a));
            goto out;
        }
        t->data = data + a;
        t->nbytes = (size_t)(b - a);
    }
out:
    json_free(&d);
    return rc;
}

NANO_API const char *nano_model_meta(const nano_model *m, const char *key) {
    if (!m || !key) return NULL;
    for (int i = 0; i < m->n_meta; i++)
        if (strcmp(m->meta[i].key, key) == 0) return m->meta[i].value;
    return NULL;
}

NANO_API int nano_model_tensor(const nano_model *m, const char *name, const void **data,
                               size_t *nbytes) {
    if (!m || !name || !data || !nbytes)
        return nano_set_error(NANO_ERR_INVALID_ARG, "NULL argument");
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) {
            *data = m->tensors[i].data;
            *nbytes = m->tensors[i].nbytes;
            return NANO_OK;
        }
    return nano_set_error(NANO_ERR_INVALID_ARG, "no tensor named %s", name);
}

/* params.no_mmap: read the whole file into anonymous memory instead of mapping it.
 * The region is rounded up to 2 MiB and advised MADV_HUGEPAGE, so where the kernel
 * has transparent huge pages (mode "madvise" or "always") the weights sit in 2 MiB
 * pages: far fewer TLB misses while decode streams them, and no 4 KiB page
 * boundary for the hardware prefetcher to stop at. The cost is a private copy
 * (not shared with the page cache or other processes) read at load time. */
#define HUGE_BYTES ((size_t)2 << 20)
static int read_anonymous(int fd, size_t size, void **out, size_t *alloc) {
    size_t bytes = (size + HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return nano_set_error(NANO_ERR_NO_MEMORY, "cannot allocate %zu bytes for the weights: %s",
                              bytes, strerror(errno));
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: 4 KiB pages where THP is off */
#endif
    size_t done = 0;
    while (done < size) {
        size_t want = size - done < ((size_t)1 << 30) ? size - done : ((size_t)1 << 30);
        ssize_t r = pread(fd, (uint8_t *)p + done, want, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            munmap(p, bytes);
            return nano_set_error(NANO_ERR_IO, "read failed at byte %zu of %zu: %s", done, size,
                                  e ? strerror(e) : "unexpected end of file");
        }
        done += (size_t)r;
    }
    mprotect(p, bytes, PROT_READ); /* the weights are read-only from here, as when mapped */
    *out = p;
    *alloc = bytes;
    return NANO_OK;
}

/* The mapped file starts on a 2 MiB boundary and is advised MADV_HUGEPAGE: where the page
 * cache holds the file in 2 MiB folios (ext4 and others build them on Linux 6.x when the
 * file is read through such a mapping), the kernel maps them with one PMD entry each, so
 * decode streams the weights with as few TLB misses as the --no-mmap copy, without the
 * copy. Pages cached earlier in small folios stay 4 KiB mappings; nothing else changes. */
static void *map_file_aligned(int fd, size_t size, int flags) {
    size_t span = size + HUGE_BYTES;
    uint8_t *r = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return mmap(NULL, size, PROT_READ, flags, fd, 0);
    uint8_t *a = (uint8_t *)(((uintptr_t)r + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1));
    void *p = mmap(a, size, PROT_READ, flags | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
        munmap(r, span);
        return mmap(NULL, size, PROT_READ, flags, fd, 0);
    }
    /* give back the reservation around the mapping (whole pages only) */
    if (a > r) munmap(r, (size_t)(a - r));
    long pg = sysconf(_SC_PAGESIZE);
    size_t ps = pg > 0 ? (size_t)pg : 4096;
    uint8_t *end = a + (size + ps - 1) / ps * ps;
    if (end < r + span) munmap(end, (size_t)(r + span - end));
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE); /* advice only */
#endif
    return p;
}

NANO_API nano_model_params nano_model_default_params(void) {
    nano_model_params p = {0};
    return p;
}

NANO_API void nano_model_free(nano_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_tensors; i++) free(m->tensors[i].name);
    free(m->tensors);
    for (int i = 0; i < m->n_meta; i++) { free(m->meta[i].key); free(m->meta[i].value); }
    free(m->meta);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    if (m->map) munmap(m->map, m->alloc_bytes);
    free(m);
}

NANO_API int nano_model_load(const char *path, const nano_model_params *params, nano_model **out) {
    if (out) *out = NULL;
    if (!path || !out) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL path or out pointer");
    nano_model_params dp = nano_model_default_params();
    if (!params) params = &dp;
    nano_f16_lut_init();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nano_set_error(NANO_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return nano_set_error(NANO_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return nano_set_error(NANO_ERR_FORMAT, "%s: file too short (%lld bytes)", path,
                              (long long)st.st_size);
    }
    nano_model *m = calloc(1, sizeof *m);
    if (!m) { close(fd); return nano_set_error(NANO_ERR_NO_MEMORY, "out of memory"); }
    int rc0;
    void *map = NULL;
    if (params->no_mmap) {
        if ((rc0 = read_anonymous(fd, (size_t)st.st_size, &map, &m->alloc_bytes))) {
            char msg[300]; /* the detail lives in the buffer nano_set_error writes */
            snprintf(msg, sizeof msg, "%s", nano_last_error());
            close(fd);
            free(m);
            return nano_set_error(rc0, "%s: %s", path, msg);
        }
        close(fd);
    } else {
        int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
        if (params->prefault) flags |= MAP_POPULATE;
#endif
        map = map_file_aligned(fd, (size_t)st.st_size, flags);
        close(fd);
        if (map == MAP_FAILED) {
            free(m);
            return nano_set_error(NANO_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        }
        m->alloc_bytes = (size_t)st.st_size;
    }
    m->map = map;
    m->map_bytes = (size_t)st.st_size;
    int rc = parse_header(m);
    if (rc) goto fail;
    const char *ver = nano_model_meta(m, "nano.format_version");
    if (!ver) { rc = nano_set_error(NANO_ERR_FORMAT, "missing metadata nano.format_version (not a .nano file)"); goto fail; }
    if (strcmp(ver, "1") != 0) {
        rc = nano_set_error(NANO_ERR_UNSUPPORTED, "unsupported nano.format_version %.16s (this engine reads 1)", ver);
        goto fail;
    }
    const char *cj = nano_model_meta(m, "nano.config");
    if (!cj) { rc = nano_set_error(NANO_ERR_FORMAT, "missing metadata nano.config"); goto fail; }
    char err[256];
    if (nano_config_from_json(cj, strlen(cj), &m->cfg, err, sizeof err)) {
        rc = nano_set_error(NANO_ERR_FORMAT, "%s", err);
        goto fail;
    }
    if ((rc = bind_weights(m))) goto fail;
    *out = m;
    return NANO_OK;
fail: {
        /* keep the detailed message, prefixed with the path */
        char msg[600];
        snprintf(msg, sizeof msg, "%s", nano_last_error());
        nano_model_free(m);
        return nano_set_error(rc, "%s: %s", path, msg);
    }
}

NANO_API int nano_model_get_info(const nano_model *m, nano_model_info *info) {
    if (!m || !info) return nano_set_error(NANO_ERR_INVALID_ARG, "NULL argument");
    const nano_config *c = &m->cfg;
    memset(info, 0, sizeof *info);
    info->family = c->family;
    info->vocab_size = c->vocab_size;
    info->dim = c->dim;
    info->n_layers = c->n_layers;
    info->n_heads = c->n_heads;
    info->n_kv_heads = c->n_kv_heads;
    info->head_dim = c->head_dim;
    info->hidden_dim = c->hidden_dim;
    info->max_seq_len = c->max_seq_len;
    info->sliding_window = c->sliding_window;
    for (int i = 0; i < c->n_layers; i++) info->n_global_layers += nano_layer_is_global(c, i);
    info->file_bytes = (int64_t)m->map_bytes;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per = c->dim * qd * 2 + c->dim * kvd * 2 + 3LL * c->dim * c->hidden_dim + 2LL * c->dim +
                  (c->post_norms ? 2LL * c->dim : 0) + (c->qk_norm ? 2LL * c->head_dim : 0);
    info->n_params = per * c->n_layers + c->dim +
                     (int64_t)c->vocab_size * c->dim * (c->tie_embeddings ? 1 : 2);
    return NANO_OK;
}
