"""Export a model folder to SavedModel (TF Serving), TFLite and ONNX."""
