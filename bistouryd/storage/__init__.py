"""DuckDB storage. The recorder agent is its only writer; see ``db.open_db``."""
