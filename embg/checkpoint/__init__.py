"""From ``--model`` to a strictly loaded embedder: a hub id, a local checkpoint directory or a built-in
fixture (embg.fixtures) is located on disk (resolve.py) and loaded with every weight checked (load.py).

It sits above embg.fixtures (which writes fixtures on first use) and below export and validate."""
