package ai.nanoruntime;

import java.util.ArrayList;
import java.util.List;

/**
 * A .nano model file, memory-mapped, with its tokenizer. Thread-safe; create one
 * {@link NanoSession} per conversation. Closing the model closes its open sessions.
 *
 * <pre>
 * try (NanoModel model = NanoModel.load(path);
 *      NanoSession chat = model.newSession()) {
 *     chat.chat("user", "Hi!", 128, (id, text) -> { System.out.print(text); return true; });
 * }
 * </pre>
 */
public final class NanoModel implements AutoCloseable {
    static {
        NativeLoader.load();
    }

    private long handle; // nano_text_model*
    private final List<NanoSession> sessions = new ArrayList<>();

    private NanoModel(long handle) {
        this.handle = handle;
    }

    /** Map and validate a .nano file. Throws NanoException (status IO / FORMAT / ...) on failure. */
    public static NanoModel load(String path) {
        if (path == null) throw new NullPointerException("path");
        return new NanoModel(nativeLoad(path));
    }

    synchronized long handle() {
        if (handle == 0) throw new IllegalStateException("NanoModel is closed");
        return handle;
    }

    /** A conversation with the model's full context and one thread per CPU. */
    public NanoSession newSession() {
        return newSession(0, 0);
    }

    /** nCtx: context length (0 = the model's); nThreads: 0 = one per CPU. */
    public synchronized NanoSession newSession(int nCtx, int nThreads) {
        NanoSession s = new NanoSession(this, NanoSession.nativeCreate(handle(), nCtx, nThreads));
        sessions.add(s);
        return s;
    }

    synchronized void forget(NanoSession s) {
        sessions.remove(s);
    }

    public synchronized int vocabSize() {
        return nativeVocabSize(handle());
    }

    /** Token ids of plain text, with BOS if the model wants one. */
    public synchronized int[] tokenize(String text) {
        return nativeTokenize(handle(), text, -1, false);
    }

    /** Token ids of text (special: control-token text such as "<|im_start|>" becomes the control token). */
    public synchronized int[] tokenize(String text, boolean addBos, boolean special) {
        return nativeTokenize(handle(), text, addBos ? 1 : 0, special);
    }

    public synchronized String detokenize(int[] ids) {
        return nativeDetokenize(handle(), ids);
    }

    @Override
    public void close() {
        List<NanoSession> open;
        synchronized (this) {
            if (handle == 0) return;
            open = new ArrayList<>(sessions);
        }
        for (NanoSession s : open) s.close();
        synchronized (this) {
            nativeFree(handle);
            handle = 0;
        }
    }

    private static native long nativeLoad(String path);
    private static native void nativeFree(long handle);
    private static native int nativeVocabSize(long handle);
    private static native int[] nativeTokenize(long handle, String text, int addBos, boolean special);
    private static native String nativeDetokenize(long handle, int[] ids);
}
