//! The contract of `TextIndex`, run against both implementations: each test
//! is instantiated once per backend (`contract::embedded::…`,
//! `contract::postgres::…`).

mod access;
mod lifecycle;
mod queries;

use self::access::*;
use self::lifecycle::*;
use self::queries::*;

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::support::run(crate::support::Backend::Embedded, |fixture| async move {
                        super::$test(&fixture).await
                    })
                    .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::support::run(crate::support::Backend::Postgres, |fixture| async move {
                        super::$test(&fixture).await
                    })
                    .await;
                }
            )*
        }
    };
}

contract!(
    upsert_then_search_finds_the_entry,
    upsert_replaces_by_key,
    the_last_entry_of_a_key_in_a_batch_wins,
    remove_deletes_and_ignores_unknown_keys,
    keys_and_status_follow_the_entries,
    purge_tenant_removes_everything_of_that_tenant_only,
    better_matches_rank_first,
    tenants_never_see_each_other,
    private_entries_are_seen_by_their_owner_only,
    restricted_entries_need_one_of_their_roles,
    kinds_filter_what_is_returned,
    query_syntax_is_just_words,
    filters_cannot_be_bypassed_from_the_query,
    long_empty_and_zero_limit_queries,
    non_ascii_text_is_searchable,
    english_words_match_their_inflections,
);
