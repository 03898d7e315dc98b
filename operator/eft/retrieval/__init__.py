"""Retrieval shared by the stages: the FAISS index (`index`), BEIR datasets on disk (`beir`), and dense
retrieval scored with BEIR's metrics (`scoring`)."""
