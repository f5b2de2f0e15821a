"""One pipeline call, from small parts with typed events between them (see pipeline.py)."""
