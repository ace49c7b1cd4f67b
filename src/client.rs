//! Client library (placeholder replaced below).
