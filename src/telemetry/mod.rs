//! Span records, the exporter pipeline, the in-memory trace ring and metrics.
