package dev.embg.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import dev.embg.core.EmbedEncoder
import dev.embg.core.Vectors

/**
 * The bundle's .tflite in LiteRT's CompiledModel API: one fixed-length signature per bucket
 * (seq64, seq256, ...), int32 input_ids/attention_mask [1, L] in, float32 [1, D] out.
 *
 * Asks for [requested]; when that accelerator cannot compile or run the model, falls back to
 * CPU and says why in [note], so the UI and the parity report never show a silent fallback.
 */
class Embedder private constructor(
    private val model: CompiledModel,
    private val encoder: EmbedEncoder,
    val requested: Accelerator,
    val used: Accelerator,
    val note: String,
    val loadMs: Double,
) : AutoCloseable {

    private class Buffers(val inputs: Map<String, TensorBuffer>, val output: TensorBuffer)

    private val buffers = HashMap<String, Buffers>()
    private val manifest get() = encoder.manifest()

    /** One embedding (float32, L2-normalised by the model) for already padded inputs. */
    fun embed(encoded: EmbedEncoder.Encoded): FloatArray {
        val sig = encoded.signature.name
        val b = buffers.getOrPut(sig) {
            val ins = manifest.inputNames.associateWith { model.createInputBuffer(it, sig) }
            Buffers(ins, model.createOutputBuffer(manifest.outputName, sig))
        }
        b.inputs.getValue("input_ids").writeInt(encoded.inputIds)
        b.inputs.getValue("attention_mask").writeInt(encoded.attentionMask)
        model.run(b.inputs, mapOf(manifest.outputName to b.output), sig)
        val out = b.output.readFloat()
        check(out.size == manifest.embeddingDim) { "model returned ${out.size} values, manifest says ${manifest.embeddingDim}" }
        check(Vectors.allFinite(out)) { "model returned NaN/inf (fp16 activations on this accelerator?)" }
        return out
    }

    fun embed(text: String, prompt: String): FloatArray = embed(encoder.encode(text, prompt))

    override fun close() {
        model.close()
    }

    companion object {
        fun open(source: BundleSource, encoder: EmbedEncoder, requested: Accelerator): Embedder {
            val modelFile = encoder.manifest().modelFile
            fun compile(acc: Accelerator): CompiledModel {
                val options = CompiledModel.Options(acc)
                return when (source) {
                    is BundleSource.Assets -> CompiledModel.create(source.context.assets, source.assetPath(modelFile), options)
                    is BundleSource.Directory -> CompiledModel.create(java.io.File(source.dir, modelFile).absolutePath, options)
                }
            }
            val t0 = System.nanoTime()
            if (requested != Accelerator.CPU) {
                var tried: Embedder? = null
                try {
                    tried = Embedder(compile(requested), encoder, requested, requested, "", ms(t0))
                    tried.embed("warm-up", "") // some delegates compile lazily: fail here, not on the first query
                    return tried
                } catch (t: Throwable) {
                    tried?.close()
                    val t1 = System.nanoTime()
                    val note = "$requested unavailable (${t.javaClass.simpleName}: ${t.message}); fell back to CPU"
                    return Embedder(compile(Accelerator.CPU), encoder, requested, Accelerator.CPU, note, ms(t1))
                }
            }
            return Embedder(compile(Accelerator.CPU), encoder, requested, Accelerator.CPU, "", ms(t0))
        }

        private fun ms(start: Long) = (System.nanoTime() - start) / 1e6
    }
}
