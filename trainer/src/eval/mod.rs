//! Retrieval metrics: Recall@K, NMI, MAP@R.
