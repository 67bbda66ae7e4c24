//! Results out: a Unix socket streaming one JSON line per frame.
