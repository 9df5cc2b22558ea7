//! A clock that follows the wall clock plus an offset the test can move.

use std::sync::Mutex;
use std::time::Duration;

use karen_domain::clock::{Clock, SystemClock};
use time::OffsetDateTime;

/// Wall-clock time plus an adjustable offset.
#[derive(Debug, Default)]
pub struct TestClock {
    offset: Mutex<Duration>,
}

impl TestClock {
    /// Moves time forward for the server under test.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        SystemClock.now() + *self.offset.lock().unwrap()
    }
}
