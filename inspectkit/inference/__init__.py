"""Inference: checkpoints, the ONNX Runtime fast path and the InferenceHandler that serves both backends."""
