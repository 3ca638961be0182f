"""Makes the int8 dynamic-quantized model the daemon runs from the pinned all-MiniLM-L6-v2
file, whose weights are stored as int8 but multiplied in float.

1. ONNX Runtime's basic graph optimisations fold the stored weights' dequantization
   (int8 -> Cast -> Mul scale) into float constants;
2. onnxruntime.quantization.quantize_dynamic turns each MatMul with a constant weight into
   MatMulInteger (int8 weights per tensor, activations quantized per call), which this CPU
   runs with VNNI.

Both steps are deterministic for pinned versions; provision-model.sh checks the result
against its SHA-256 pin. Usage: quantize-model.py SOURCE.onnx DEST.onnx
"""
import logging
import os
import sys

import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic


def main(source: str, dest: str) -> None:
    # The quantizer logs advice for image models at WARNING; only errors matter here.
    logging.getLogger().setLevel(logging.ERROR)
    folded = dest + ".folded.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = folded
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    try:
        quantize_dynamic(folded, dest, weight_type=QuantType.QInt8, per_channel=False, reduce_range=False)
    finally:
        os.remove(folded)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: quantize-model.py SOURCE.onnx DEST.onnx")
    main(sys.argv[1], sys.argv[2])
