"""What to try: sweep specs (YAML) with their strict schema, quant formats, the GPU catalog and
model architectures. Imports neither `engines` nor `evaluation` nor `flows`."""
