//! Statements over many rows. Their text depends on the row count, so each
//! shape is built once and kept for the life of the process: callers send at
//! most [`MAX_ROWS`] rows per statement, which bounds the shapes kept (and the
//! prepared statements each connection caches) to a few hundred short strings.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// The most rows one statement carries (13 columns × 64 rows stays far below
/// both dialects' limits on bind parameters).
pub(crate) const MAX_ROWS: usize = 64;

type Shapes = Mutex<HashMap<(&'static str, usize, usize), &'static str>>;

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(Shapes::default)
}

/// The statement `head`, `rows` groups `($1, $n, …)` of `width` parameters
/// after the tenant (`$1`, repeated in every row), then `tail`. With
/// `width == 0` the groups are bare parameters `$2, $3, …` (for `IN (…)`).
pub(crate) fn statement(
    head: &'static str,
    width: usize,
    rows: usize,
    tail: &'static str,
) -> &'static str {
    let key = (head, width, rows);
    let mut shapes = shapes()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sql) = shapes.get(&key) {
        return sql;
    }
    let mut sql = String::from(head);
    let mut next = 2;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        if width == 0 {
            let _ = write!(sql, "${next}");
            next += 1;
            continue;
        }
        sql.push_str("($1");
        for _ in 0..width {
            let _ = write!(sql, ", ${next}");
            next += 1;
        }
        sql.push(')');
    }
    sql.push_str(tail);
    // Bounded (see the module's doc): at most MAX_ROWS shapes per statement head.
    let sql: &'static str = Box::leak(sql.into_boxed_str());
    shapes.insert(key, sql);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_lists_number_their_parameters_after_the_tenant() {
        assert_eq!(
            statement("INSERT INTO t (a, b, c) VALUES ", 2, 2, " RETURNING a"),
            "INSERT INTO t (a, b, c) VALUES ($1, $2, $3), ($1, $4, $5) RETURNING a"
        );
        assert_eq!(
            statement("DELETE FROM t WHERE a = $1 AND b IN (", 0, 3, ")"),
            "DELETE FROM t WHERE a = $1 AND b IN ($2, $3, $4)"
        );
    }
}
