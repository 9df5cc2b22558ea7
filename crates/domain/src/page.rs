//! Cursor pagination. Ids are UUIDv7, so "after this id" is a stable cursor.

use uuid::Uuid;

use crate::Error;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 200;

/// Which page to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Return items whose id sorts after this one.
    pub after: Option<Uuid>,
    /// At most this many items (1–200).
    pub limit: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            after: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl PageRequest {
    /// Validates client-given paging parameters.
    pub fn parse(after: Option<&str>, limit: Option<u32>) -> Result<Self, Error> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(
                Some("limit"),
                format!("limit must be between 1 and {MAX_LIMIT} (got {limit})"),
            ));
        }
        let after = match after {
            None | Some("") => None,
            Some(text) => Some(Uuid::try_parse(text).map_err(|_| {
                Error::invalid(
                    Some("after"),
                    "after must be the next_cursor of a previous page",
                )
            })?),
        };
        Ok(Self { after, limit })
    }

    /// How many rows to fetch: one more than the limit, to know whether a next page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to read the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `fetch_limit()` rows, using `id` to make the cursor.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, id: impl Fn(&T) -> Uuid) -> Self {
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| id(last).to_string())
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    /// Maps the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
