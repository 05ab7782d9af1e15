"""Nightly batch tagging with the ONNX model on Ray Data: `tagging score`, `quantize`, `bench-score`.

Ray-free modules: layout (output, commits), scorer (ONNX Runtime), dedup, quantize, faults.
Ray shell: stages (the Ray Data UDFs) and job (the driver). Nothing runs at import.
"""
