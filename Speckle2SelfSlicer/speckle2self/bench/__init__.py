"""The benchmark machinery: simulator, peer methods, quality benchmark and its report, speed benchmark,
ablation and fine-tuning curve. Not part of the product: the Slicer extension does not ship it, and no
product module imports it (the CLI's benchmark commands import it when they run)."""
