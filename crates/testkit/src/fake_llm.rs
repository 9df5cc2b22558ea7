//! A fake OpenAI-compatible upstream for tests (being built).
