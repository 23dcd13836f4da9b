"""Reports: one model of results, many renderers: console tables (plans, trials) and the sweep
report (`sweep_report`: HTML with plotly, markdown, matplotlib PNGs, logged to MLflow)."""
