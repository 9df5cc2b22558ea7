//! Vector indexes behind `karen_domain::ports::VectorIndex` (in progress).
