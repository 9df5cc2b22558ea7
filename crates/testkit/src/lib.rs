//! Test support: spawn a whole Karen server per test on SQLite or PostgreSQL.
