//! The checks behind the fuzz targets. They live in a library so the stable fuzz smoke test of the
//! main package can include the very same files (by path) and run them without a fuzzer.

pub mod frames;
pub mod iso8583;
pub mod session;
