"""Pages of the docs site generated from the code, so they cannot drift from it: the configuration
reference (every key of every app's composed config), the troubleshooting catalogue, the study
pages. ``python -m distillab.docsgen`` rewrites the committed ones; the tests fail when they differ."""
