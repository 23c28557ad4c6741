/* nano_text.h - text in, text out: the native tokenizer, chat formatting and a
 * text session on top of the token API of nano.h. This is what an app embeds
 * (the Java/JNI binding in kernels/bindings/java is a thin layer over it).
 *
 *   nano_tokenizer    : built from the "tokenizer.json" tensor of a .nano file
 *                       (the HF tokenizer.json bytes) and the "nano.tokenizer_config"
 *                       metadata. Immutable after load: [model] thread-safety.
 *                       Two shapes, as the GGUF importer writes them:
 *                       - byte-level BPE (SmolLM2 / GPT-2): optional Digits
 *                         pre-tokenizer (every \p{N} on its own), then the GPT-2
 *                         regex, bytes mapped to the GPT-2 alphabet, merges by rank;
 *                       - SentencePiece-style BPE (Gemma): spaces -> U+2581,
 *                         optional prefix U+2581, merges by rank, <0xNN> byte
 *                         fallback for characters outside the vocabulary.
 *                       Added tokens are split out first (leftmost-longest):
 *                       control tokens only when `special` is set, user-defined
 *                       tokens always - the rules of HF `tokenizers` and llama.cpp.
 *   nano_text_model   : a nano_model + its nano_tokenizer.
 *   nano_text_session : one conversation (a nano_context) with plain-text and
 *                       chat-turn generation, streaming whole UTF-8 characters.
 *
 * Sizing convention of the functions that fill a caller buffer: *n_out always
 * receives the full size; when it exceeds `cap`, only the first `cap` items were
 * written (call again with a bigger buffer).
 *
 * This header is included at the end of nano.h and includes it: either works.
 */
#ifndef NANO_TEXT_H
#define NANO_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "nano.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tokenizer ------------------------------------------------------------ */
typedef struct nano_tokenizer nano_tokenizer;

enum { NANO_TOK_BYTE_BPE = 1, NANO_TOK_SPM_BPE = 2 };
enum { NANO_CHAT_NONE = 0, NANO_CHAT_CHATML = 1, NANO_CHAT_GEMMA = 2 };

/* Build a tokenizer from tokenizer.json bytes [json_len] and the tokenizer config
 * JSON ({bos_id, eos_id, add_bos, stop_ids, chat_template}; NUL-terminated, may be
 * NULL). NANO_ERR_FORMAT for malformed JSON, NANO_ERR_UNSUPPORTED for a tokenizer
 * shape this engine does not implement (nano_last_error() says which). [any] */
NANO_API int nano_tokenizer_load(const char *json, size_t json_len, const char *config_json,
                                 nano_tokenizer **out);
/* The same from a loaded model's "tokenizer.json" tensor and metadata. [model] */
NANO_API int nano_tokenizer_from_model(const nano_model *model, nano_tokenizer **out);
NANO_API void nano_tokenizer_free(nano_tokenizer *tok); /* NULL is a no-op. */

typedef struct {
    int kind;             /* NANO_TOK_*                                   */
    int vocab_size;       /* ids are 0..vocab_size-1                      */
    int bos_id, eos_id;   /* -1 = none                                    */
    int add_bos;          /* the model's rule for plain text              */
    int chat_format;      /* NANO_CHAT_*                                  */
    int n_stop_ids;
    const int32_t *stop_ids; /* [n_stop_ids], lives as long as tok       */
} nano_tokenizer_info;

NANO_API int nano_tokenizer_get_info(const nano_tokenizer *tok, nano_tokenizer_info *info);

/* Token ids of text[len] (UTF-8; invalid bytes are kept as bytes).
 * add_bos: -1 = the model's rule, 0 = no, 1 = yes. special: 1 = control-token
 * text (e.g. "<|im_start|>") becomes the control token; 0 = it is plain text. [model] */
NANO_API int nano_tokenize(const nano_tokenizer *tok, const char *text, size_t len, int add_bos,
                           int special, int32_t *out, int cap, int *n_out);
/* The bytes one token stands for (byte tokens: one byte; U+2581 -> ' ';
 * control tokens: their text). Lives as long as tok. [model] */
NANO_API int nano_token_piece(const nano_tokenizer *tok, int32_t id, const char **bytes,
                              size_t *len);
/* Concatenated pieces of ids[n]; skip_special drops control tokens. [model] */
NANO_API int nano_detokenize(const nano_tokenizer *tok, const int32_t *ids, int n,
                             int skip_special, char *out, size_t cap, size_t *n_out);

/* Incremental detokenizer: token ids in, whole UTF-8 characters out (the streaming
 * rule of nano_text_generate, for apps that run nano_generate themselves). push:
 * *text[*len] is the text this token completes (maybe empty; valid until the next
 * call); invalid bytes come out as U+FFFD. flush: what is left (an incomplete
 * character becomes U+FFFD). One stream per generation thread. [ctx] */
typedef struct nano_detok_stream nano_detok_stream;
NANO_API int nano_detok_stream_create(const nano_tokenizer *tok, nano_detok_stream **out);
NANO_API int nano_detok_stream_push(nano_detok_stream *ds, int32_t token, const char **text,
                                    size_t *len);
NANO_API int nano_detok_stream_flush(nano_detok_stream *ds, const char **text, size_t *len);
NANO_API void nano_detok_stream_free(nano_detok_stream *ds);

/* ---- chat formatting ------------------------------------------------------ */
typedef struct {
    const char *role;    /* "system", "user", "assistant" */
    const char *content; /* UTF-8, NUL-terminated          */
} nano_chat_message;

/* Render messages with the model's chat format (ChatML for SmolLM2 - including
 * its default system prompt -, Gemma turns for Gemma 3), the same text as the
 * model's Jinja chat template. NANO_ERR_UNSUPPORTED when the model has none. [model] */
NANO_API int nano_chat_apply(const nano_tokenizer *tok, const nano_chat_message *msgs, int n,
                             int add_generation_prompt, char *out, size_t cap, size_t *n_out);

/* ---- text model and session ----------------------------------------------- */
typedef struct nano_text_model nano_text_model;
typedef struct nano_text_session nano_text_session;

/* nano_model_load + nano_tokenizer_from_model. params may be NULL. [any] */
NANO_API int nano_text_model_load(const char *path, const nano_model_params *params,
                                  nano_text_model **out);
NANO_API void nano_text_model_free(nano_text_model *tm); /* free its sessions first */
NANO_API nano_model *nano_text_model_model(const nano_text_model *tm);
NANO_API const nano_tokenizer *nano_text_model_tokenizer(const nano_text_model *tm);

/* Called once per generated token (stop tokens are not passed), in the generating
 * thread. text[len] holds only whole UTF-8 characters: the bytes of a character
 * split across tokens arrive with the token that completes it (len may be 0);
 * with stop strings, text is held back while it could start one, and the token
 * that completes a stop string brings only the text before it.
 * Invalid bytes arrive as U+FFFD, so the concatenation is always valid UTF-8.
 * If generation ends inside a character, one last call with token -1 carries
 * U+FFFD. Return non-zero to stop (NANO_STOP_CALLBACK). */
typedef int (*nano_text_fn)(void *user, int32_t token, const char *text, size_t len);

typedef struct {
    int max_tokens;              /* >= 1                                  */
    nano_sampler_params sampler; /* default: greedy                       */
    nano_text_fn on_text;        /* NULL = no streaming                   */
    void *user;
    /* ---- added after 0.1 (at the end: the ABI is additive) ---- */
    /* Stop strings (see nano_generate_params): generation ends with NANO_STOP_STRING
     * when the output text contains one; the stop string and what follows it are
     * not streamed. Text that could be the start of a stop string is held back
     * until it is known not to be (llama.cpp server's rule); when generation ends
     * otherwise, the held text arrives in one last call with token -1. */
    const char *const *stop_strings; /* [n_stop_strings], non-empty UTF-8      */
    int n_stop_strings;              /* 0..NANO_MAX_STOP_STRINGS              */
    int context_shift;               /* 1: sliding context (nano_generate_params) */
    int n_keep;                      /* tokens kept at the start on a shift    */
} nano_text_params;

NANO_API nano_text_params nano_text_default_params(void); /* [any] */

/* One conversation; params may be NULL (nano_context_default_params()). [model] */
NANO_API int nano_text_session_create(nano_text_model *tm, const nano_context_params *params,
                                      nano_text_session **out);
NANO_API void nano_text_session_free(nano_text_session *s); /* NULL is a no-op. [ctx] */
/* Forget the conversation. [ctx] */
NANO_API int nano_text_session_reset(nano_text_session *s);
/* Ask a running generate/chat to stop soon. [any] */
NANO_API void nano_text_session_cancel(nano_text_session *s);
NANO_API int nano_text_session_get_stats(const nano_text_session *s, nano_stats *stats);
NANO_API nano_context *nano_text_session_context(const nano_text_session *s);

/* Continue the session with plain text (BOS first when the session is empty and
 * the model wants one; control-token text stays plain text), then generate,
 * stopping at the model's stop ids. result may be NULL. [ctx] */
NANO_API int nano_text_generate(nano_text_session *s, const char *prompt,
                                const nano_text_params *params, nano_generate_result *result);
/* Append msgs[n] as chat turns (the previous reply is closed first), open the
 * assistant turn and generate the reply. The reply stays in the session, so the
 * next call continues the conversation. [ctx] */
NANO_API int nano_text_chat(nano_text_session *s, const nano_chat_message *msgs, int n,
                            const nano_text_params *params, nano_generate_result *result);

#ifdef __cplusplus
}
#endif
#endif /* NANO_TEXT_H */
