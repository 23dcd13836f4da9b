"""Accuracy of quantized variants against the unquantized baseline on held-out text.

`perplexity` scores one model per window (needs torch, imported only when called); `paired`
compares two such results window by window with a bootstrap interval (numpy only). Nothing is
imported here so that importing the package stays light.
"""
