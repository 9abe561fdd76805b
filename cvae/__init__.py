"""The `cvae` command: one entry point for serving, training, export, evaluation and download."""
