package dev.embg.demo

import android.app.Activity
import android.app.Instrumentation
import android.os.Build
import android.os.Bundle
import com.google.ai.edge.litert.Accelerator
import dev.embg.core.ParityProtocol
import java.io.File

/**
 * The adb parity entry point, run by embg's adb runner (embg/devices/adb/client.py):
 *
 *   adb shell am instrument -w -e bundle /data/local/tmp/embg/bundle \
 *       -e input /data/local/tmp/embg/input.json dev.embg.demo/.ParityInstrumentation
 *
 * Reads token ids pushed by the host (so the model is compared on identical inputs), runs each
 * through the bundle's model on the requested accelerator, writes embeddings + timings to the
 * app's external files dir (the only place both the app may write and adb may read) and reports
 * that path back as an INSTRUMENTATION_RESULT.
 */
class ParityInstrumentation : Instrumentation() {
    private var args: Bundle = Bundle()

    override fun onCreate(arguments: Bundle?) {
        super.onCreate(arguments)
        args = arguments ?: Bundle()
        start() // runs onStart on a new thread
    }

    override fun onStart() {
        super.onStart()
        val out = File(targetContext.getExternalFilesDir(null), "embg/output.json")
        val results = Bundle()
        try {
            out.parentFile?.mkdirs()
            val json = run()
            val tmp = File(out.path + ".tmp")
            tmp.writeText(json, Charsets.UTF_8)
            check(tmp.renameTo(out)) { "cannot write $out" } // the host never pulls a half-written file
            results.putString("status", "ok")
            results.putString("output", out.absolutePath)
            finish(Activity.RESULT_OK, results)
        } catch (t: Throwable) {
            results.putString("status", "failed")
            results.putString("error", "${t.javaClass.simpleName}: ${t.message}".replace('\n', ' '))
            finish(Activity.RESULT_CANCELED, results)
        }
    }

    private fun run(): String {
        val bundleDir = File(args.getString("bundle") ?: BundleSource.PUSHED_DIR)
        val input = File(args.getString("input") ?: "/data/local/tmp/embg/input.json")
        val request = ParityProtocol.parseRequest(input.readText(Charsets.UTF_8))
        val source = BundleSource.Directory(bundleDir)
        val encoder = source.loadEncoder()
        val accelerator = when (request.accelerator.lowercase()) {
            "gpu" -> Accelerator.GPU
            "npu" -> Accelerator.NPU
            else -> Accelerator.CPU
        }
        val device = linkedMapOf<String, Any?>(
            "model" to Build.MODEL, "manufacturer" to Build.MANUFACTURER, "sdk" to Build.VERSION.SDK_INT,
            "abi" to Build.SUPPORTED_ABIS.firstOrNull(), "stand_in" to false,
        )
        Embedder.open(source, encoder, accelerator).use { embedder ->
            val response = ParityProtocol.Response(
                "android-app", device, request.accelerator, embedder.used.name.lowercase(), embedder.note, embedder.loadMs,
            )
            for (item in request.items) {
                val encoded = encoder.pad(item.ids, false)
                var embedding = FloatArray(0)
                val ms = DoubleArray(request.repeats) {
                    val t = System.nanoTime()
                    embedding = embedder.embed(encoded)
                    (System.nanoTime() - t) / 1e6
                }
                // the app's own tokenizer on the same text: must give the host's ids exactly
                val match = item.text?.let { encoder.ids(it, item.prompt ?: "").contentEquals(item.ids) }
                response.add(item.name, encoded.signature, item.ids.size, embedding, ms, match)
            }
            return response.toJson()
        }
    }
}
