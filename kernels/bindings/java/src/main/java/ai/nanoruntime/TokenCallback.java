package ai.nanoruntime;

/**
 * Receives generated text as it streams, once per generated token, on the generating thread.
 * {@code text} holds only whole characters: a character whose UTF-8 bytes span several tokens
 * arrives with the token that completes it (so {@code text} may be empty). Return {@code false}
 * to stop the generation. An exception thrown here stops the generation and is rethrown by the
 * generate/chat call.
 */
@FunctionalInterface
public interface TokenCallback {
    boolean onToken(int tokenId, String text);
}
