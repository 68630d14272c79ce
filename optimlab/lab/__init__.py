"""The lab: trials (spec → train → metrics), learning-rate tuning, executors and the SQLite
results store."""
