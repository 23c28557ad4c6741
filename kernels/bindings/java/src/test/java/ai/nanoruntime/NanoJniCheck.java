package ai.nanoruntime;

import java.util.Arrays;

/**
 * The checks tests/test_java.py runs on the host JVM (one mode per run, results as
 * "key=value" lines on stdout):
 *
 *   stream MODEL PROMPT N      greedy-generate N tokens: ids, callback count, text
 *   callbacks MODEL N          one generate call of N tokens with a callback counting them
 *   chat MODEL N MESSAGE       one chat turn, then a second one (the session remembers)
 *   errors MODEL CORRUPT       bad path, corrupt file, closed model/session -> exceptions
 */
public final class NanoJniCheck {
    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "stream": stream(args[1], args[2], Integer.parseInt(args[3])); break;
            case "callbacks": callbacks(args[1], Integer.parseInt(args[2])); break;
            case "chat": chat(args[1], Integer.parseInt(args[2]), args[3]); break;
            case "errors": errors(args[1], args[2]); break;
            default: throw new IllegalArgumentException(args[0]);
        }
    }

    static String join(int[] ids) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < ids.length; i++) b.append(i == 0 ? "" : ",").append(ids[i]);
        return b.toString();
    }

    static String hex(String s) {
        StringBuilder b = new StringBuilder();
        for (byte x : s.getBytes(java.nio.charset.StandardCharsets.UTF_8)) b.append(String.format("%02x", x));
        return b.toString();
    }

    static void stream(String path, String prompt, int n) {
        try (NanoModel model = NanoModel.load(path); NanoSession s = model.newSession(0, 1)) {
            int[] count = {0};
            int[] seen = new int[n];
            StringBuilder text = new StringBuilder();
            GenerationResult r = s.generate(prompt, n, (id, piece) -> {
                seen[count[0]++] = id;
                text.append(piece);
                return true;
            });
            System.out.println("prompt_ids=" + join(model.tokenize(prompt)));
            System.out.println("ids=" + join(r.tokens));
            System.out.println("callback_ids=" + join(Arrays.copyOf(seen, count[0])));
            System.out.println("callbacks=" + count[0]);
            System.out.println("generated=" + r.generatedTokens);
            System.out.println("stop=" + r.stopReason);
            // cancel() from another thread stops a running generation
            s.reset();
            int[] c1 = {0};
            GenerationResult rc = s.generate("Once upon a time", 5000, (id, piece) -> {
                if (++c1[0] == 100) {
                    Thread t = new Thread(s::cancel);
                    t.start();
                    try { t.join(); } catch (InterruptedException e) { throw new RuntimeException(e); }
                }
                return true;
            });
            System.out.println("cancelled=" + rc.stopReason + " after=" + c1[0]);
            System.out.println("text_hex=" + hex(text.toString()));
            System.out.println("detok_hex=" + hex(model.detokenize(r.tokens)));
        }
    }

    static void callbacks(String path, int n) {
        try (NanoModel model = NanoModel.load(path); NanoSession s = model.newSession(0, 1)) {
            long[] count = {0};
            GenerationResult r = s.generate("Once upon a time", n, (id, piece) -> {
                count[0]++;
                return true;
            });
            System.out.println("callbacks=" + count[0]);
            System.out.println("generated=" + r.generatedTokens);
            System.out.println("stop=" + r.stopReason);
            // cancel() from another thread stops a running generation
            s.reset();
            int[] c1 = {0};
            GenerationResult rc = s.generate("Once upon a time", 5000, (id, piece) -> {
                if (++c1[0] == 100) {
                    Thread t = new Thread(s::cancel);
                    t.start();
                    try { t.join(); } catch (InterruptedException e) { throw new RuntimeException(e); }
                }
                return true;
            });
            System.out.println("cancelled=" + rc.stopReason + " after=" + c1[0]);
            // a callback that returns false stops at once; one that throws propagates
            int[] c2 = {0};
            GenerationResult r2 = s.generate(" again", 50, (id, piece) -> ++c2[0] < 3);
            System.out.println("stopped_after=" + c2[0] + " reason=" + r2.stopReason);
            try {
                s.generate(" more", 50, (id, piece) -> { throw new IllegalArgumentException("from callback"); });
                System.out.println("callback_exception=none");
            } catch (IllegalArgumentException e) {
                System.out.println("callback_exception=" + e.getMessage());
            }
        }
    }

    static void chat(String path, int n, String message) {
        try (NanoModel model = NanoModel.load(path); NanoSession s = model.newSession(0, 1)) {
            StringBuilder a = new StringBuilder(), b = new StringBuilder();
            GenerationResult r1 = s.chat("user", message, n, (id, t) -> { a.append(t); return true; });
            GenerationResult r2 = s.chat("user", "And again?", n, (id, t) -> { b.append(t); return true; });
            System.out.println("turn1_ids=" + join(r1.tokens));
            System.out.println("turn1_hex=" + hex(a.toString()));
            System.out.println("turn2_prompt=" + r2.promptTokens);
            System.out.println("turn2_ids=" + join(r2.tokens));
            System.out.println("n_past=" + s.stats()[5]);
        }
    }

    static void expect(String name, Class<? extends Throwable> type, Runnable body) {
        try {
            body.run();
            System.out.println(name + "=no exception");
        } catch (Throwable t) {
            String status = t instanceof NanoException ? " status=" + ((NanoException) t).status() : "";
            System.out.println(name + "=" + (type.isInstance(t) ? "ok " : "WRONG ") + t.getClass().getSimpleName()
                    + status + " " + t.getMessage());
        }
    }

    static void errors(String path, String corrupt) {
        expect("bad_path", NanoException.class, () -> NanoModel.load("/no/such/dir/model.nano"));
        expect("corrupt", NanoException.class, () -> NanoModel.load(corrupt));
        NanoModel model = NanoModel.load(path);
        NanoSession s = model.newSession(0, 1);
        s.close();
        expect("closed_session", IllegalStateException.class, () -> s.generate("hi", 4, null));
        s.close(); // twice is fine
        NanoSession s2 = model.newSession(0, 1);
        model.close();
        expect("closed_model", IllegalStateException.class, () -> model.tokenize("hi", false, false));
        expect("closed_by_model", IllegalStateException.class, () -> s2.generate("hi", 4, null));
        expect("new_session_closed", IllegalStateException.class, () -> model.newSession());
        NanoModel m2 = NanoModel.load(path);
        try (NanoSession s3 = m2.newSession(0, 1)) {
            expect("bad_max_tokens", NanoException.class, () -> s3.generate("hi", 0, null));
            expect("context_full", NanoException.class, () -> {
                StringBuilder big = new StringBuilder();
                for (int i = 0; i < 20000; i++) big.append(" word");
                s3.generate(big.toString(), 4, null);
            });
        }
        m2.close();
        System.out.println("alive=yes");
    }
}
