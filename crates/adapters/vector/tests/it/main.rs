//! The vector index contract: the same tests against the embedded index and
//! Milvus, plus what only the embedded index has (files, crash recovery).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod contract;
mod embedded;
#[cfg(feature = "milvus")]
mod milvus;
mod support;
