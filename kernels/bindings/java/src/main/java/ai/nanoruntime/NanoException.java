package ai.nanoruntime;

/** A non-zero status of the native engine (kernels/include/nano.h), with its detailed message. */
public class NanoException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public static final int INVALID_ARG = 1, IO = 2, FORMAT = 3, UNSUPPORTED = 4, NO_MEMORY = 5,
            BUDGET = 6, CONTEXT_FULL = 7, CANCELLED = 8, KERNEL = 9, STATE = 10;

    private final int status;

    public NanoException(int status, String message) {
        super(message);
        this.status = status;
    }

    /** The engine's status code (one of the constants above). */
    public int status() {
        return status;
    }
}
