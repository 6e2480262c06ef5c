package dev.embg.demo

import android.content.Context
import dev.embg.core.EmbedEncoder
import dev.embg.core.HfTokenizer
import dev.embg.core.Manifest
import java.io.File

/**
 * Where an embg bundle (manifest.json + .tflite + tokenizer.json) lives: inside the APK
 * (assets/bundle/) or in a directory on the device (e.g. pushed with adb).
 */
sealed class BundleSource {
    abstract val description: String
    abstract fun readText(name: String): String

    data class Assets(val context: Context, val dir: String = "bundle") : BundleSource() {
        override val description get() = "APK assets/$dir"
        override fun readText(name: String) =
            context.assets.open("$dir/$name").use { it.readBytes().toString(Charsets.UTF_8) }
        fun assetPath(name: String) = "$dir/$name"
    }

    data class Directory(val dir: File) : BundleSource() {
        override val description get() = dir.absolutePath
        override fun readText(name: String) = File(dir, name).readText(Charsets.UTF_8)
    }

    /** Manifest + tokenizer, i.e. everything except the model itself. */
    fun loadEncoder(): EmbedEncoder {
        val manifest = Manifest.parse(readText("manifest.json"))
        require(manifest.target == "tflite") { "bundle target is ${manifest.target}; this app runs tflite bundles" }
        return EmbedEncoder(manifest, HfTokenizer.fromJson(readText("tokenizer.json")))
    }

    companion object {
        const val PUSHED_DIR = "/data/local/tmp/embg/bundle"

        /** Assets first (shipped with the app), then the app's own storage, then what adb pushed. */
        fun find(context: Context): BundleSource {
            if (context.assets.list("bundle")?.contains("manifest.json") == true) return Assets(context)
            val candidates = listOfNotNull(context.getExternalFilesDir("bundle"), File(PUSHED_DIR))
            candidates.firstOrNull { File(it, "manifest.json").canRead() }?.let { return Directory(it) }
            throw IllegalStateException(
                "no bundle found: put one in app/src/main/assets/bundle/, or adb push it to " +
                    candidates.joinToString(" or ") { it.absolutePath } + " (see android_demo/README.md)"
            )
        }
    }
}
