package ai.nanoruntime;

/**
 * Loads libnano_jni: from the path in system property "nano.jni.path" (tests, desktop) or
 * by name through java.library.path (Android packs it into the APK's lib/ABI/ folder).
 */
final class NativeLoader {
    private static boolean loaded;

    private NativeLoader() {}

    static synchronized void load() {
        if (loaded) return;
        String path = System.getProperty("nano.jni.path");
        if (path != null && !path.isEmpty()) System.load(path);
        else System.loadLibrary("nano_jni");
        loaded = true;
    }
}
