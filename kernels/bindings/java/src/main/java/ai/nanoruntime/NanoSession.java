package ai.nanoruntime;

/**
 * One conversation: a KV cache on the model. generate/chat run on the calling thread
 * (one at a time per session); {@link #cancel()} may be called from any thread.
 */
public final class NanoSession implements AutoCloseable {
    private final NanoModel model;
    private long handle; // nano_text_session*
    private final Object lock = new Object();       // one generate/chat/reset/close at a time
    private final Object cancelLock = new Object(); // cancel never races the free

    NanoSession(NanoModel model, long handle) {
        this.model = model;
        this.handle = handle;
    }

    private long handle() {
        if (handle == 0) throw new IllegalStateException("NanoSession is closed");
        return handle;
    }

    /** Continue the session with plain text and generate greedily up to maxTokens. */
    public GenerationResult generate(String prompt, int maxTokens, TokenCallback callback) {
        return generate(prompt, maxTokens, 0f, 0L, callback);
    }

    /** temperature 0 = greedy; the same seed gives the same tokens. */
    public GenerationResult generate(String prompt, int maxTokens, float temperature, long seed,
                                     TokenCallback callback) {
        if (prompt == null) throw new NullPointerException("prompt");
        synchronized (lock) {
            return nativeGenerate(handle(), prompt, null, null, maxTokens, temperature, seed, callback);
        }
    }

    /** Add one chat turn (role "system" / "user") and stream the assistant's reply. */
    public GenerationResult chat(String role, String content, int maxTokens, TokenCallback callback) {
        return chat(new String[] {role}, new String[] {content}, maxTokens, callback);
    }

    /** Add several turns at once (e.g. a system prompt and the first user message). */
    public GenerationResult chat(String[] roles, String[] contents, int maxTokens,
                                 TokenCallback callback) {
        if (roles == null || contents == null || roles.length != contents.length)
            throw new IllegalArgumentException("roles and contents must have the same length");
        synchronized (lock) {
            return nativeGenerate(handle(), null, roles, contents, maxTokens, 0f, 0L, callback);
        }
    }

    /** Ask a running generate/chat to stop soon (stopReason "cancelled"). Any thread. */
    public void cancel() {
        synchronized (cancelLock) {
            if (handle != 0) nativeCancel(handle);
        }
    }

    /** Forget the conversation. */
    public void reset() {
        synchronized (lock) {
            nativeReset(handle());
        }
    }

    /** {prefillTokens, decodeTokens, kvBytes, weightsBytes, peakRssBytes, nPast, nCtx}. */
    public long[] stats() {
        synchronized (lock) {
            return nativeStats(handle());
        }
    }

    @Override
    public void close() {
        synchronized (lock) {
            if (handle == 0) return;
            long h = handle;
            synchronized (cancelLock) {
                handle = 0;
            }
            nativeFree(h);
        }
        model.forget(this);
    }

    static native long nativeCreate(long model, int nCtx, int nThreads);
    private static native void nativeFree(long handle);
    private static native void nativeCancel(long handle);
    private static native void nativeReset(long handle);
    private static native long[] nativeStats(long handle);
    private static native GenerationResult nativeGenerate(long handle, String prompt, String[] roles,
                                                          String[] contents, int maxTokens,
                                                          float temperature, long seed,
                                                          TokenCallback callback);
}
