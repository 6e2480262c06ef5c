package dev.embg.demo

import android.app.Activity
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.view.View
import android.view.inputmethod.EditorInfo
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.Spinner
import android.widget.TextView
import com.google.ai.edge.litert.Accelerator
import dev.embg.core.EmbedEncoder
import dev.embg.core.SemanticIndex
import java.util.concurrent.Executors

/**
 * Semantic search over a few dozen bundled sentences (assets/corpus.txt): documents are embedded
 * with the "document" prompt once, each query with the "query" prompt; results are ranked by
 * cosine at the chosen Matryoshka dimension. Shows the accelerator actually used and the latency.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor() // LiteRT work off the UI thread, one at a time
    private val main = Handler(Looper.getMainLooper())
    private lateinit var status: TextView
    private lateinit var results: TextView
    private lateinit var query: EditText
    private lateinit var search: Button
    private lateinit var dims: Spinner

    private var source: BundleSource? = null
    private var encoder: EmbedEncoder? = null
    private var embedder: Embedder? = null
    private var corpus: List<String> = emptyList()
    private var corpusEmbeddings: List<FloatArray> = emptyList()
    private var setupNote = ""

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status)
        results = findViewById(R.id.results)
        query = findViewById(R.id.query)
        search = findViewById(R.id.search)
        dims = findViewById(R.id.dims)
        val accelerators = findViewById<Spinner>(R.id.accelerator)
        accelerators.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, listOf("CPU", "GPU", "NPU"))
        accelerators.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(p: AdapterView<*>?, v: View?, pos: Int, id: Long) =
                load(Accelerator.valueOf(accelerators.selectedItem as String))
            override fun onNothingSelected(p: AdapterView<*>?) = Unit
        }
        search.setOnClickListener { runQuery() }
        query.setOnEditorActionListener { _, action, _ -> (action == EditorInfo.IME_ACTION_SEARCH).also { if (it) runQuery() } }
    }

    /** (Re)load the bundle on [accelerator] and embed the corpus. */
    private fun load(accelerator: Accelerator) {
        search.isEnabled = false
        status.text = "Loading bundle on $accelerator…"
        worker.execute {
            try {
                embedder?.close()
                embedder = null
                val src = source ?: BundleSource.find(this).also { source = it }
                val enc = encoder ?: src.loadEncoder().also { encoder = it }
                if (corpus.isEmpty()) corpus = assets.open("corpus.txt").bufferedReader().readLines().filter { it.isNotBlank() }
                val e = Embedder.open(src, enc, accelerator)
                embedder = e
                val t0 = System.nanoTime()
                corpusEmbeddings = corpus.map { e.embed(it, "document") }
                val perDoc = (System.nanoTime() - t0) / 1e6 / corpus.size
                setupNote = buildString {
                    append("Bundle: ${src.description} (${enc.manifest().modelId}, ${enc.manifest().recipe})\n")
                    append("Accelerator: ${e.used}")
                    if (e.note.isNotEmpty()) append("\nNOTE: ${e.note}")
                    append("\nModel load %.0f ms; %d sentences embedded, %.1f ms each".format(e.loadMs, corpus.size, perDoc))
                }
                val dimList = enc.manifest().matryoshkaDims
                main.post {
                    dims.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, dimList.map { "dim $it" })
                    status.text = setupNote
                    search.isEnabled = true
                }
            } catch (t: Throwable) {
                main.post { status.text = "Could not load the bundle: ${t.message}" }
            }
        }
    }

    private fun runQuery() {
        val text = query.text.toString()
        val e = embedder ?: return
        val enc = encoder ?: return
        val dim = enc.manifest().matryoshkaDims[dims.selectedItemPosition.coerceAtLeast(0)]
        worker.execute {
            try {
                val encoded = enc.encode(text, "query")
                val t0 = System.nanoTime()
                val q = e.embed(encoded)
                val ms = (System.nanoTime() - t0) / 1e6
                val index = SemanticIndex(dim)
                corpus.indices.forEach { index.add(corpus[it], corpusEmbeddings[it]) }
                val hits = index.search(q, 10)
                val lines = hits.joinToString("\n\n") { "%.3f  %s".format(it.score, it.text) }
                val info = "Query: %d tokens in bucket %s%s, %.1f ms on %s, dim %d".format(
                    encoded.tokenCount, encoded.signature.name, if (encoded.truncated) " (truncated)" else "", ms, e.used, dim,
                )
                main.post {
                    status.text = "$setupNote\n$info"
                    results.text = lines
                }
            } catch (t: Throwable) {
                main.post { results.text = "Search failed: ${t.message}" }
            }
        }
    }

    override fun onDestroy() {
        worker.execute { embedder?.close() }
        worker.shutdown()
        super.onDestroy()
    }
}
