/* arm64_generate.c - the whole native stack in one small program, built for the
 * host and cross-built for ARM64 (run under qemu-aarch64) by arm64_build.sh:
 * load a .nano file, tokenize a prompt natively, write the last prompt position's
 * logits, then greedy-generate through the text API (streaming callback).
 *
 *   arm64_generate MODEL PROMPT N_TOKENS LOGITS_OUT [precise]
 *
 * precise: fp32 activations into the matmuls (nano_context_params.precise = 1)
 * instead of int8 activations.
 * Prints key=value lines: kernel (the dispatched kernel variant), prompt_ids,
 * ids, callbacks, text_hex. tests/test_arm64.py compares the ARM64 run with the
 * x86-64 run of the same file: same tokens, logits within a small tolerance.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nano.h"

typedef struct {
    int32_t ids[4096];
    int n, callbacks;
    char text[65536];
    size_t len;
} collect;

static int on_text(void *user, int32_t token, const char *text, size_t len) {
    collect *c = user;
    c->callbacks++;
    if (token >= 0 && c->n < 4096) c->ids[c->n++] = token;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, text, len);
        c->len += len;
    }
    return 0;
}

static int fail(const char *what, int st) {
    fprintf(stderr, "error: %s: %s (%s)\n", what, nano_last_error(), nano_status_message(st));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 6 && !strcmp(argv[5], "precise"))) {
        fprintf(stderr, "usage: %s MODEL PROMPT N_TOKENS LOGITS_OUT [precise]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1], *prompt = argv[2], *logits_out = argv[4];
    int n_tokens = atoi(argv[3]), st;
    if (n_tokens < 1 || n_tokens > 4096) return fail("N_TOKENS must be 1..4096", NANO_ERR_INVALID_ARG);

    nano_text_model *tm;
    if ((st = nano_text_model_load(path, NULL, &tm))) return fail("load", st);
    nano_context_params cp = nano_context_default_params();
    cp.n_threads = 2;
    cp.precise = argc == 6;
    nano_text_session *s;
    if ((st = nano_text_session_create(tm, &cp, &s))) return fail("session", st);
    nano_stats stats;
    nano_text_session_get_stats(s, &stats);
    printf("kernel=%s\n", stats.kernel ? stats.kernel : "?");

    /* tokenize natively; evaluate the prompt; keep its last logits */
    const nano_tokenizer *tok = nano_text_model_tokenizer(tm);
    int32_t ids[1024];
    int n = 0;
    if ((st = nano_tokenize(tok, prompt, strlen(prompt), -1, 0, ids, 1024, &n))) return fail("tokenize", st);
    if (n > 1024) return fail("prompt too long", NANO_ERR_INVALID_ARG);
    printf("prompt_ids=");
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    printf("\n");
    nano_context *ctx = nano_text_session_context(s);
    if ((st = nano_eval(ctx, ids, n, NULL))) return fail("eval", st);
    nano_model_info info;
    nano_model_get_info(nano_text_model_model(tm), &info);
    FILE *f = fopen(logits_out, "wb");
    if (!f || fwrite(nano_context_logits(ctx), sizeof(float), (size_t)info.vocab_size, f) !=
                  (size_t)info.vocab_size)
        return fail("writing logits", NANO_ERR_IO);
    fclose(f);

    /* greedy generation through the text API, streamed */
    if ((st = nano_text_session_reset(s))) return fail("reset", st);
    collect *c = calloc(1, sizeof *c);
    nano_text_params p = nano_text_default_params();
    p.max_tokens = n_tokens;
    p.on_text = on_text;
    p.user = c;
    nano_generate_result r;
    if ((st = nano_text_generate(s, prompt, &p, &r))) return fail("generate", st);
    printf("ids=");
    for (int i = 0; i < c->n; i++) printf(i ? ",%d" : "%d", c->ids[i]);
    printf("\ncallbacks=%d\ngenerated=%d\nstop=%s\ntext_hex=", c->callbacks, r.n_generated,
           nano_stop_reason_name(r.stop_reason));
    for (size_t i = 0; i < c->len; i++) printf("%02x", (unsigned char)c->text[i]);
    printf("\n");
    free(c);
    nano_text_session_free(s);
    nano_text_model_free(tm);
    return 0;
}
