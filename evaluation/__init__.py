"""The measure side: planning and prediction, benchmarks, accuracy, selection, tracking, reports."""
