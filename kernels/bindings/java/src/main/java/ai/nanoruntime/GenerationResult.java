package ai.nanoruntime;

/** What one generate/chat call did. */
public final class GenerationResult {
    public final int promptTokens, generatedTokens;
    /** "length", "stop", "context", "cancelled", "callback". */
    public final String stopReason;
    public final double prefillTokensPerSecond, decodeTokensPerSecond;
    /** The generated token ids, in order. */
    public final int[] tokens;

    GenerationResult(int promptTokens, int generatedTokens, String stopReason, double prefillTps,
                     double decodeTps, int[] tokens) {
        this.promptTokens = promptTokens;
        this.generatedTokens = generatedTokens;
        this.stopReason = stopReason;
        this.prefillTokensPerSecond = prefillTps;
        this.decodeTokensPerSecond = decodeTps;
        this.tokens = tokens;
    }

    @Override
    public String toString() {
        return "GenerationResult{prompt=" + promptTokens + ", generated=" + generatedTokens
                + ", stop=" + stopReason + ", decode=" + String.format("%.1f", decodeTokensPerSecond)
                + " tok/s}";
    }
}
