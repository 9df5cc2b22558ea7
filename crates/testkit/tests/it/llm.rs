//! (model provider tests to come)
