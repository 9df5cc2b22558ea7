//! Full-text indexes behind `karen_domain::ports::TextIndex` (in progress).
