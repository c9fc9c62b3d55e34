//! Placeholder: see README Architecture.
