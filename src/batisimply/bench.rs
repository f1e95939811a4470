//! Client benchmark against the in-process simulator (placeholder, filled below).
