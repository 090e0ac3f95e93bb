//! How an embedding is served: ONNX Runtime inference, the vector index, the HTTP API.
