"""Parity against the reference: the one path that embeds texts with a bundle's runtime and with
sentence-transformers (alone and in padded batches, :mod:`embg.parity.path`) and the metrics
computed on the two (:mod:`embg.parity.metrics`: drift, retrieval agreement, rank correlations).

One NaN rule everywhere: a row holding NaN/inf, or a cosine that is not finite, is a failure.
Used by the export-time check, embg-validate, the device runners and bench. This layer sits above
runtimes (it drives any Runtime) and below export, devices and validate.
"""
