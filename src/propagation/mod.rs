//! The trace-context engine: one strict parser and writer per dialect, free of I/O.
