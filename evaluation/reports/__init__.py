"""Reports: one model of results, many renderers (console tables today)."""
