/* nano_jni.c - the JNI glue of ai.nanoruntime.{NanoModel,NanoSession} over nano_text.h.
 *
 * Rules (after ExecuTorch's android/jni layer):
 *  - every non-zero status becomes a Java exception: NanoException(status, detailed
 *    message); a closed (0) handle is an IllegalStateException; nothing aborts;
 *  - only JNI_OnLoad and Java_* are exported (the engine is linked in with hidden
 *    visibility: build.sh / CMakeLists.txt check it);
 *  - strings cross as real UTF-8 <-> UTF-16 (not JNI's "modified UTF-8", which
 *    mangles characters outside the BMP such as emoji);
 *  - a callback creates exactly one local reference (its String) and deletes it
 *    before returning, so 10,000 callbacks in one native call do not grow the
 *    local reference table; classes and method ids are cached once in JNI_OnLoad.
 */
#include <jni.h>
#include <stdlib.h>
#include <string.h>

#include "nano_text.h"

static jclass g_nano_exc, g_state_exc, g_result_cls;
static jmethodID g_nano_exc_ctor, g_result_ctor, g_on_token;

/* ---- strings ------------------------------------------------------------------ */
/* UTF-8 (valid or not) -> UTF-16; *n = code units. Invalid bytes become U+FFFD. */
static jchar *utf8_to_utf16(const char *s, size_t len, jsize *n) {
    jchar *out = malloc((len + 1) * sizeof *out);
    size_t k = 0, i = 0;
    if (!out) return NULL;
    while (i < len) {
        const unsigned char *p = (const unsigned char *)s + i;
        uint32_t cp;
        size_t need = p[0] < 0x80 ? 1 : (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3
                      : (p[0] & 0xF8) == 0xF0 ? 4 : 0;
        int ok = need && i + need <= len;
        cp = need == 1 ? p[0] : need == 2 ? p[0] & 0x1F : need == 3 ? p[0] & 0x0F : p[0] & 0x07;
        for (size_t j = 1; ok && j < need; j++) {
            ok = (p[j] & 0xC0) == 0x80;
            cp = (cp << 6) | (p[j] & 0x3F);
        }
        if (ok && ((need == 2 && cp < 0x80) || (need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) ||
                   cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
            ok = 0;
        if (!ok) { cp = 0xFFFD; need = 1; }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            out[k++] = (jchar)(0xD800 + (cp >> 10));
            out[k++] = (jchar)(0xDC00 + (cp & 0x3FF));
        } else {
            out[k++] = (jchar)cp;
        }
        i += need;
    }
    *n = (jsize)k;
    return out;
}

static jstring new_string(JNIEnv *env, const char *s, size_t len) {
    jsize n;
    jchar *u = utf8_to_utf16(s, len, &n);
    if (!u) return NULL;
    jstring r = (*env)->NewString(env, u, n);
    free(u);
    return r;
}

/* Java String -> malloc'd NUL-terminated UTF-8 (unpaired surrogates -> U+FFFD). */
static char *get_utf8(JNIEnv *env, jstring js) {
    jsize n = (*env)->GetStringLength(env, js);
    const jchar *u = (*env)->GetStringChars(env, js, NULL);
    if (!u) return NULL;
    char *out = malloc((size_t)n * 3 + 1);
    size_t k = 0;
    for (jsize i = 0; out && i < n; i++) {
        uint32_t cp = u[i];
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < n && u[i + 1] >= 0xDC00 && u[i + 1] <= 0xDFFF)
            cp = 0x10000 + ((cp - 0xD800) << 10) + (u[++i] - 0xDC00);
        else if (cp >= 0xD800 && cp <= 0xDFFF)
            cp = 0xFFFD;
        if (cp < 0x80) out[k++] = (char)cp;
        else if (cp < 0x800) { out[k++] = (char)(0xC0 | (cp >> 6)); out[k++] = (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            out[k++] = (char)(0xE0 | (cp >> 12)); out[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[k++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[k++] = (char)(0xF0 | (cp >> 18)); out[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            out[k++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[k++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    (*env)->ReleaseStringChars(env, js, u);
    if (out) out[k] = 0;
    return out;
}

/* ---- errors ------------------------------------------------------------------- */
static void throw_msg(JNIEnv *env, int status, const char *msg) {
    if ((*env)->ExceptionCheck(env)) return;
    jstring js = new_string(env, msg, strlen(msg));
    if (!js) return; /* OutOfMemoryError pending */
    jobject e = (*env)->NewObject(env, g_nano_exc, g_nano_exc_ctor, (jint)status, js);
    if (e) (*env)->Throw(env, (jthrowable)e);
    (*env)->DeleteLocalRef(env, js);
    if (e) (*env)->DeleteLocalRef(env, e);
}

static void throw_status(JNIEnv *env, int status) {
    const char *detail = nano_last_error();
    throw_msg(env, status, detail && detail[0] ? detail : nano_status_message(status));
}

static int closed(JNIEnv *env, jlong h, const char *what) {
    if (h) return 0;
    (*env)->ThrowNew(env, g_state_exc, what);
    return 1;
}

static void throw_oom(JNIEnv *env) {
    if (!(*env)->ExceptionCheck(env)) throw_status(env, NANO_ERR_NO_MEMORY);
}

JNIEXPORT jint JNI_OnLoad(JavaVM *vm, void *reserved) {
    JNIEnv *env;
    if ((*vm)->GetEnv(vm, (void **)&env, JNI_VERSION_1_6) != JNI_OK) return JNI_ERR;
    jclass c;
    if (!(c = (*env)->FindClass(env, "ai/nanoruntime/NanoException"))) return JNI_ERR;
    g_nano_exc = (*env)->NewGlobalRef(env, c);
    (*env)->DeleteLocalRef(env, c);
    if (!(c = (*env)->FindClass(env, "java/lang/IllegalStateException"))) return JNI_ERR;
    g_state_exc = (*env)->NewGlobalRef(env, c);
    (*env)->DeleteLocalRef(env, c);
    if (!(c = (*env)->FindClass(env, "ai/nanoruntime/GenerationResult"))) return JNI_ERR;
    g_result_cls = (*env)->NewGlobalRef(env, c);
    (*env)->DeleteLocalRef(env, c);
    if (!(c = (*env)->FindClass(env, "ai/nanoruntime/TokenCallback"))) return JNI_ERR;
    g_on_token = (*env)->GetMethodID(env, c, "onToken", "(ILjava/lang/String;)Z");
    (*env)->DeleteLocalRef(env, c);
    g_nano_exc_ctor = (*env)->GetMethodID(env, g_nano_exc, "<init>", "(ILjava/lang/String;)V");
    g_result_ctor = (*env)->GetMethodID(env, g_result_cls, "<init>", "(IILjava/lang/String;DD[I)V");
    if (!g_nano_exc || !g_state_exc || !g_result_cls || !g_on_token || !g_nano_exc_ctor || !g_result_ctor)
        return JNI_ERR;
    return JNI_VERSION_1_6;
}

/* ---- NanoModel ------------------------------------------------------------------ */
JNIEXPORT jlong JNICALL Java_ai_nanoruntime_NanoModel_nativeLoad(JNIEnv *env, jclass cls, jstring path) {
    char *p = get_utf8(env, path);
    if (!p) { throw_oom(env); return 0; }
    nano_text_model *tm = NULL;
    int st = nano_text_model_load(p, NULL, &tm);
    free(p);
    if (st != NANO_OK) { throw_status(env, st); return 0; }
    return (jlong)(intptr_t)tm;
}

JNIEXPORT void JNICALL Java_ai_nanoruntime_NanoModel_nativeFree(JNIEnv *env, jclass cls, jlong h) {
    nano_text_model_free((nano_text_model *)(intptr_t)h);
}

JNIEXPORT jint JNICALL Java_ai_nanoruntime_NanoModel_nativeVocabSize(JNIEnv *env, jclass cls, jlong h) {
    if (closed(env, h, "NanoModel is closed")) return 0;
    nano_tokenizer_info info;
    nano_tokenizer_get_info(nano_text_model_tokenizer((nano_text_model *)(intptr_t)h), &info);
    return info.vocab_size;
}

JNIEXPORT jintArray JNICALL Java_ai_nanoruntime_NanoModel_nativeTokenize(JNIEnv *env, jclass cls, jlong h,
                                                                          jstring text, jint add_bos,
                                                                          jboolean special) {
    if (closed(env, h, "NanoModel is closed")) return NULL;
    if (!text) { (*env)->ThrowNew(env, g_state_exc, "text is null"); return NULL; }
    const nano_tokenizer *tok = nano_text_model_tokenizer((nano_text_model *)(intptr_t)h);
    char *s = get_utf8(env, text);
    if (!s) { throw_oom(env); return NULL; }
    size_t len = strlen(s);
    int cap = (int)len + 2, n = 0, st;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    st = ids ? nano_tokenize(tok, s, len, add_bos < 0 ? -1 : add_bos ? 1 : 0, special ? 1 : 0, ids, cap, &n) : NANO_ERR_NO_MEMORY;
    free(s);
    if (st != NANO_OK) { free(ids); throw_status(env, st); return NULL; }
    jintArray arr = (*env)->NewIntArray(env, n);
    if (arr) (*env)->SetIntArrayRegion(env, arr, 0, n, (const jint *)ids);
    free(ids);
    return arr;
}

JNIEXPORT jstring JNICALL Java_ai_nanoruntime_NanoModel_nativeDetokenize(JNIEnv *env, jclass cls, jlong h,
                                                                          jintArray ids) {
    if (closed(env, h, "NanoModel is closed")) return NULL;
    const nano_tokenizer *tok = nano_text_model_tokenizer((nano_text_model *)(intptr_t)h);
    jsize n = (*env)->GetArrayLength(env, ids);
    jint *v = (*env)->GetIntArrayElements(env, ids, NULL);
    if (!v) return NULL;
    size_t need = 0;
    int st = nano_detokenize(tok, (const int32_t *)v, n, 0, NULL, 0, &need);
    char *out = st == NANO_OK ? malloc(need + 1) : NULL;
    if (st == NANO_OK && !out) st = NANO_ERR_NO_MEMORY;
    if (st == NANO_OK) st = nano_detokenize(tok, (const int32_t *)v, n, 0, out, need + 1, &need);
    (*env)->ReleaseIntArrayElements(env, ids, v, JNI_ABORT);
    jstring r = NULL;
    if (st == NANO_OK) r = new_string(env, out, need);
    else throw_status(env, st);
    free(out);
    return r;
}

/* ---- NanoSession ------------------------------------------------------------------ */
JNIEXPORT jlong JNICALL Java_ai_nanoruntime_NanoSession_nativeCreate(JNIEnv *env, jclass cls, jlong model,
                                                                      jint n_ctx, jint n_threads) {
    if (closed(env, model, "NanoModel is closed")) return 0;
    nano_context_params cp = nano_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = n_threads;
    nano_text_session *s = NULL;
    int st = nano_text_session_create((nano_text_model *)(intptr_t)model, &cp, &s);
    if (st != NANO_OK) { throw_status(env, st); return 0; }
    return (jlong)(intptr_t)s;
}

JNIEXPORT void JNICALL Java_ai_nanoruntime_NanoSession_nativeFree(JNIEnv *env, jclass cls, jlong h) {
    nano_text_session_free((nano_text_session *)(intptr_t)h);
}

JNIEXPORT void JNICALL Java_ai_nanoruntime_NanoSession_nativeCancel(JNIEnv *env, jclass cls, jlong h) {
    nano_text_session_cancel((nano_text_session *)(intptr_t)h);
}

JNIEXPORT void JNICALL Java_ai_nanoruntime_NanoSession_nativeReset(JNIEnv *env, jclass cls, jlong h) {
    if (closed(env, h, "NanoSession is closed")) return;
    int st = nano_text_session_reset((nano_text_session *)(intptr_t)h);
    if (st != NANO_OK) throw_status(env, st);
}

JNIEXPORT jlongArray JNICALL Java_ai_nanoruntime_NanoSession_nativeStats(JNIEnv *env, jclass cls, jlong h) {
    if (closed(env, h, "NanoSession is closed")) return NULL;
    nano_stats s;
    int st = nano_text_session_get_stats((nano_text_session *)(intptr_t)h, &s);
    if (st != NANO_OK) { throw_status(env, st); return NULL; }
    jlong v[7] = {s.prefill_tokens, s.decode_tokens, s.kv_bytes, s.weights_bytes, s.peak_rss_bytes,
                  s.n_past, s.n_ctx};
    jlongArray arr = (*env)->NewLongArray(env, 7);
    if (arr) (*env)->SetLongArrayRegion(env, arr, 0, 7, v);
    return arr;
}

typedef struct {
    JNIEnv *env;
    jobject callback;  /* may be NULL */
    int32_t *ids;      /* generated ids, for the result */
    int n, cap;
} jni_stream;

static int on_text(void *user, int32_t token, const char *text, size_t len) {
    jni_stream *js = user;
    if (token >= 0 && js->n < js->cap) js->ids[js->n++] = token;
    if (!js->callback) return 0;
    JNIEnv *env = js->env;
    jstring s = new_string(env, text, len);
    if (!s) return 1; /* OutOfMemoryError pending: stop */
    jboolean go = (*env)->CallBooleanMethod(env, js->callback, g_on_token, (jint)token, s);
    (*env)->DeleteLocalRef(env, s); /* one local ref per callback, released here */
    if ((*env)->ExceptionCheck(env)) return 1; /* rethrown when the native call returns */
    return go ? 0 : 1;
}

static const char *stop_name(int r) {
    switch (r) {
    case NANO_STOP_LENGTH: return "length";
    case NANO_STOP_TOKEN: return "stop";
    case NANO_STOP_CONTEXT: return "context";
    case NANO_STOP_CANCELLED: return "cancelled";
    case NANO_STOP_CALLBACK: return "callback";
    case NANO_STOP_STRING: return "stop_string";
    default: return "none";
    }
}

JNIEXPORT jobject JNICALL Java_ai_nanoruntime_NanoSession_nativeGenerate(
    JNIEnv *env, jclass cls, jlong h, jstring prompt, jobjectArray roles, jobjectArray contents,
    jint max_tokens, jfloat temperature, jlong seed, jobject callback) {
    if (closed(env, h, "NanoSession is closed")) return NULL;
    nano_text_session *s = (nano_text_session *)(intptr_t)h;
    if (max_tokens < 1) {
        throw_msg(env, NANO_ERR_INVALID_ARG, "maxTokens must be >= 1");
        return NULL;
    }
    nano_text_params p = nano_text_default_params();
    p.max_tokens = max_tokens;
    p.sampler.temperature = temperature;
    p.sampler.seed = (uint64_t)seed;
    jni_stream js = {env, callback, malloc((size_t)max_tokens * sizeof(int32_t)), 0, max_tokens};
    p.on_text = on_text;
    p.user = &js;
    nano_generate_result r;
    int st;
    if (!js.ids) { throw_oom(env); return NULL; }
    if (prompt) {
        char *text = get_utf8(env, prompt);
        if (!text) { free(js.ids); throw_oom(env); return NULL; }
        st = nano_text_generate(s, text, &p, &r);
        free(text);
    } else {
        jsize n = (*env)->GetArrayLength(env, roles);
        nano_chat_message *msgs = calloc((size_t)n + 1, sizeof *msgs);
        st = msgs ? NANO_OK : NANO_ERR_NO_MEMORY;
        for (jsize i = 0; st == NANO_OK && i < n; i++) {
            jstring r1 = (jstring)(*env)->GetObjectArrayElement(env, roles, i);
            jstring c1 = (jstring)(*env)->GetObjectArrayElement(env, contents, i);
            if (!r1 || !c1) st = NANO_ERR_INVALID_ARG;
            else {
                msgs[i].role = get_utf8(env, r1);
                msgs[i].content = get_utf8(env, c1);
                if (!msgs[i].role || !msgs[i].content) st = NANO_ERR_NO_MEMORY;
            }
            if (r1) (*env)->DeleteLocalRef(env, r1);
            if (c1) (*env)->DeleteLocalRef(env, c1);
        }
        if (st == NANO_OK) st = nano_text_chat(s, msgs, n, &p, &r);
        else if (st == NANO_ERR_INVALID_ARG) throw_msg(env, st, "a chat role or content is null");
        for (jsize i = 0; msgs && i < n; i++) {
            free((void *)msgs[i].role);
            free((void *)msgs[i].content);
        }
        free(msgs);
    }
    if ((*env)->ExceptionCheck(env)) { free(js.ids); return NULL; } /* from the callback */
    if (st != NANO_OK) { free(js.ids); throw_status(env, st); return NULL; }
    jintArray ids = (*env)->NewIntArray(env, js.n);
    if (ids) (*env)->SetIntArrayRegion(env, ids, 0, js.n, (const jint *)js.ids);
    free(js.ids);
    if (!ids) return NULL;
    jstring reason = new_string(env, stop_name(r.stop_reason), strlen(stop_name(r.stop_reason)));
    if (!reason) return NULL;
    jobject res = (*env)->NewObject(env, g_result_cls, g_result_ctor, (jint)r.n_prompt, (jint)r.n_generated,
                                    reason, (jdouble)r.prefill_tok_s, (jdouble)r.decode_tok_s, ids);
    (*env)->DeleteLocalRef(env, reason);
    (*env)->DeleteLocalRef(env, ids);
    return res;
}
