//! historian
