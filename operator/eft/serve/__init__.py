"""The embedding server: OpenAI/NIM-compatible `/v1/embeddings` with dynamic batching (`eft serve`)."""
