//! karen-text's one integration-test binary: the `TextIndex` contract run
//! against both implementations, then what is specific to each, and ignored
//! measurements (`cargo nextest run -p karen-text --run-ignored only bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bench;
mod contract;
mod embedded;
mod postgres;
mod support;
