//! Karen model providers (being built).
