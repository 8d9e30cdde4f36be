"""Device side: transport → protocol → windowing → extractor (numpy + onnxruntime + pyserial)."""
