//! The tests every `VectorIndex` passes. A backend module instantiates them
//! with `vector_index_contract!(its_fixture_function)`.

use std::sync::Arc;

use karen_domain::ports::{EntryKey, EntryKind, Hit, SearchFilter, VectorIndex};
use karen_domain::{Error, TenantId, UserId};

use crate::support::*;

/// An index under test, and whatever must live as long as it.
pub struct Fixture {
    pub index: Arc<dyn VectorIndex>,
    pub _keep: Option<tempfile::TempDir>,
}

macro_rules! vector_index_contract {
    ($fixture:path) => {
        vector_index_contract!(@tests $fixture;
            upsert_then_search_ranks_by_cosine_similarity,
            upsert_replaces_an_entry_with_the_same_key,
            remove_deletes_from_every_space_and_ignores_unknown_keys,
            keys_lists_every_key_of_the_space,
            spaces_lists_written_spaces_and_forgets_dropped_ones,
            status_counts_the_tenants_entries,
            drop_space_removes_only_that_space_of_that_tenant,
            purge_tenant_removes_only_that_tenant,
            tenants_never_see_each_others_entries,
            identical_keys_in_two_tenants_stay_apart,
            private_entries_are_seen_by_their_owner_only,
            restricted_entries_need_one_of_their_roles,
            kinds_filter_selects_entry_kinds,
            a_selective_filter_still_fills_the_limit,
            memories_and_passages_share_a_space_but_not_a_search,
            a_search_of_both_kinds_ranks_them_together,
            a_selective_filter_fills_the_limit_of_each_kind,
            changing_owner_or_roles_moves_an_entrys_visibility,
            spaces_never_mix,
            wrong_dimensions_are_refused,
            searching_nothing_finds_nothing,
            many_searches_at_once_all_succeed,
        );
    };
    (@tests $fixture:path; $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let fixture = $fixture().await;
                $crate::contract::$test(fixture.index.as_ref()).await;
            }
        )*
    };
}
pub(crate) use vector_index_contract;

fn keys(hits: &[Hit]) -> Vec<EntryKey> {
    hits.iter().map(|h| h.key).collect()
}

pub async fn upsert_then_search_ranks_by_cosine_similarity(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let (k0, k1, k2) = (memory_key(), memory_key(), memory_key());
    index
        .upsert(
            tenant,
            &space,
            vec![
                public(k0, axis(0, DIMS)),
                public(k1, near(&axis(0, DIMS), 1, 0.5)),
                public(k2, axis(3, DIMS)),
            ],
        )
        .await
        .unwrap();
    // Scaled: cosine ignores length.
    let query: Vec<f32> = axis(0, DIMS).iter().map(|x| x * 7.0).collect();
    let hits = index
        .search(tenant, &space, &query, 10, &anyone())
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![k0, k1, k2]);
    assert!((hits[0].score - 1.0).abs() < 1e-3, "{hits:?}");
    let expected = 1.0 / (1.0f32 + 0.25).sqrt();
    assert!((hits[1].score - expected).abs() < 1e-3, "{hits:?}");
    assert!(hits[2].score.abs() < 1e-3, "{hits:?}");
    let top = index
        .search(tenant, &space, &query, 2, &anyone())
        .await
        .unwrap();
    assert_eq!(keys(&top), vec![k0, k1]);
}

pub async fn upsert_replaces_an_entry_with_the_same_key(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let key = memory_key();
    let other = memory_key();
    index
        .upsert(
            tenant,
            &space,
            vec![public(key, axis(0, DIMS)), public(other, axis(2, DIMS))],
        )
        .await
        .unwrap();
    index
        .upsert(tenant, &space, vec![public(key, axis(1, DIMS))])
        .await
        .unwrap();
    assert_eq!(index.status(tenant, &space).await.unwrap().entries, 2);
    let hits = index
        .search(tenant, &space, &axis(1, DIMS), 1, &anyone())
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![key]);
    assert!((hits[0].score - 1.0).abs() < 1e-3);
    // The old vector is gone: along axis 0 the key scores 0 now.
    let hits = index
        .search(tenant, &space, &axis(0, DIMS), 10, &anyone())
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.score.abs() < 1e-3), "{hits:?}");
    // The access rules are replaced too.
    let owner = UserId::generate();
    index
        .upsert(tenant, &space, vec![owned_by(key, owner, axis(1, DIMS))])
        .await
        .unwrap();
    let hits = index
        .search(tenant, &space, &axis(1, DIMS), 10, &anyone())
        .await
        .unwrap();
    assert!(!keys(&hits).contains(&key));
}

pub async fn remove_deletes_from_every_space_and_ignores_unknown_keys(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let (a, b) = (space_a(), space_b());
    let (k0, k1) = (memory_key(), chunk_key());
    index
        .upsert(
            tenant,
            &a,
            vec![public(k0, axis(0, DIMS)), public(k1, axis(1, DIMS))],
        )
        .await
        .unwrap();
    index
        .upsert(tenant, &b, vec![public(k0, axis(0, DIMS))])
        .await
        .unwrap();
    index.remove(tenant, &[k0, memory_key()]).await.unwrap();
    assert_eq!(index.keys(tenant, &a).await.unwrap(), vec![k1]);
    assert!(index.keys(tenant, &b).await.unwrap().is_empty());
    let hits = index
        .search(tenant, &a, &axis(0, DIMS), 10, &anyone())
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![k1]);
    index.remove(tenant, &[]).await.unwrap();
    index.remove(TenantId::generate(), &[k1]).await.unwrap();
    assert_eq!(index.keys(tenant, &a).await.unwrap(), vec![k1]);
}

pub async fn keys_lists_every_key_of_the_space(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let entries: Vec<_> = (0..50u64)
        .map(|i| {
            let key = if i % 2 == 0 {
                memory_key()
            } else {
                chunk_key()
            };
            public(key, vector(i, DIMS))
        })
        .collect();
    let expected = sorted(entries.iter().map(|e| e.key).collect());
    index.upsert(tenant, &space, entries).await.unwrap();
    assert_eq!(sorted(index.keys(tenant, &space).await.unwrap()), expected);
    assert!(index.keys(tenant, &space_b()).await.unwrap().is_empty());
}

pub async fn spaces_lists_written_spaces_and_forgets_dropped_ones(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    assert!(index.spaces(tenant).await.unwrap().is_empty());
    index
        .upsert(
            tenant,
            &space_a(),
            vec![public(memory_key(), axis(0, DIMS))],
        )
        .await
        .unwrap();
    index
        .upsert(
            tenant,
            &space_a_wide(),
            vec![public(memory_key(), axis(0, DIMS * 2))],
        )
        .await
        .unwrap();
    let mut expected = vec![space_a(), space_a_wide()];
    expected.sort();
    assert_eq!(index.spaces(tenant).await.unwrap(), expected);
    index.drop_space(tenant, &space_a()).await.unwrap();
    assert_eq!(index.spaces(tenant).await.unwrap(), vec![space_a_wide()]);
    assert!(index.spaces(TenantId::generate()).await.unwrap().is_empty());
}

pub async fn status_counts_the_tenants_entries(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (0, false));
    let entries: Vec<_> = (0..7u64)
        .map(|i| public(memory_key(), vector(i, DIMS)))
        .collect();
    let first = entries[0].key;
    index.upsert(tenant, &space, entries).await.unwrap();
    index
        .upsert(
            TenantId::generate(),
            &space,
            vec![public(memory_key(), axis(0, DIMS))],
        )
        .await
        .unwrap();
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (7, false));
    index.remove(tenant, &[first]).await.unwrap();
    assert_eq!(index.status(tenant, &space).await.unwrap().entries, 6);
}

pub async fn drop_space_removes_only_that_space_of_that_tenant(index: &dyn VectorIndex) {
    let (tenant, other) = (TenantId::generate(), TenantId::generate());
    let (a, b) = (space_a(), space_b());
    let (ka, kb, ko) = (memory_key(), memory_key(), memory_key());
    index
        .upsert(tenant, &a, vec![public(ka, axis(0, DIMS))])
        .await
        .unwrap();
    index
        .upsert(tenant, &b, vec![public(kb, axis(0, DIMS))])
        .await
        .unwrap();
    index
        .upsert(other, &a, vec![public(ko, axis(0, DIMS))])
        .await
        .unwrap();
    index.drop_space(tenant, &a).await.unwrap();
    assert!(
        index
            .search(tenant, &a, &axis(0, DIMS), 10, &anyone())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(index.status(tenant, &a).await.unwrap().entries, 0);
    assert_eq!(index.keys(tenant, &b).await.unwrap(), vec![kb]);
    assert_eq!(index.keys(other, &a).await.unwrap(), vec![ko]);
    // Dropping again, or a space never written, is fine.
    index.drop_space(tenant, &a).await.unwrap();
    index.drop_space(tenant, &space_a_wide()).await.unwrap();
    // The space can be written again afterwards.
    index
        .upsert(tenant, &a, vec![public(ka, axis(1, DIMS))])
        .await
        .unwrap();
    assert_eq!(index.keys(tenant, &a).await.unwrap(), vec![ka]);
}

pub async fn purge_tenant_removes_only_that_tenant(index: &dyn VectorIndex) {
    let (tenant, other) = (TenantId::generate(), TenantId::generate());
    let (ka, kb, ko) = (memory_key(), chunk_key(), memory_key());
    index
        .upsert(tenant, &space_a(), vec![public(ka, axis(0, DIMS))])
        .await
        .unwrap();
    index
        .upsert(tenant, &space_a_wide(), vec![public(kb, axis(0, DIMS * 2))])
        .await
        .unwrap();
    index
        .upsert(other, &space_a(), vec![public(ko, axis(0, DIMS))])
        .await
        .unwrap();
    index.purge_tenant(tenant).await.unwrap();
    assert!(index.spaces(tenant).await.unwrap().is_empty());
    assert!(index.keys(tenant, &space_a()).await.unwrap().is_empty());
    assert!(
        index
            .keys(tenant, &space_a_wide())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        index
            .search(tenant, &space_a(), &axis(0, DIMS), 10, &anyone())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(index.keys(other, &space_a()).await.unwrap(), vec![ko]);
    index.purge_tenant(tenant).await.unwrap();
}

pub async fn tenants_never_see_each_others_entries(index: &dyn VectorIndex) {
    let (a, b) = (TenantId::generate(), TenantId::generate());
    let space = space_a();
    let a_keys: Vec<_> = (0..5).map(|_| memory_key()).collect();
    let b_keys: Vec<_> = (0..5).map(|_| memory_key()).collect();
    // Identical vectors in both tenants: similarity cannot tell them apart.
    let entries = |keys: &[EntryKey]| {
        keys.iter()
            .enumerate()
            .map(|(i, k)| public(*k, vector(i as u64, DIMS)))
            .collect::<Vec<_>>()
    };
    index.upsert(a, &space, entries(&a_keys)).await.unwrap();
    index.upsert(b, &space, entries(&b_keys)).await.unwrap();
    for i in 0..5 {
        let hits = index
            .search(a, &space, &vector(i, DIMS), 100, &anyone())
            .await
            .unwrap();
        assert_eq!(sorted(keys(&hits)), sorted(a_keys.clone()));
        let hits = index
            .search(b, &space, &vector(i, DIMS), 100, &anyone())
            .await
            .unwrap();
        assert_eq!(sorted(keys(&hits)), sorted(b_keys.clone()));
    }
    assert_eq!(
        sorted(index.keys(a, &space).await.unwrap()),
        sorted(a_keys.clone())
    );
    let stranger = TenantId::generate();
    assert!(
        index
            .search(stranger, &space, &vector(0, DIMS), 100, &anyone())
            .await
            .unwrap()
            .is_empty()
    );
    // B removing A's keys changes nothing for A.
    index.remove(b, &a_keys).await.unwrap();
    assert_eq!(index.status(a, &space).await.unwrap().entries, 5);
}

pub async fn identical_keys_in_two_tenants_stay_apart(index: &dyn VectorIndex) {
    let (a, b) = (TenantId::generate(), TenantId::generate());
    let space = space_a();
    let key = memory_key();
    index
        .upsert(a, &space, vec![public(key, axis(0, DIMS))])
        .await
        .unwrap();
    index
        .upsert(b, &space, vec![public(key, axis(1, DIMS))])
        .await
        .unwrap();
    let hits = index
        .search(a, &space, &axis(0, DIMS), 10, &anyone())
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert!(
        (hits[0].score - 1.0).abs() < 1e-3,
        "B's upsert replaced A's entry: {hits:?}"
    );
    index.remove(b, &[key]).await.unwrap();
    assert_eq!(index.keys(a, &space).await.unwrap(), vec![key]);
    assert!(index.keys(b, &space).await.unwrap().is_empty());
}

pub async fn private_entries_are_seen_by_their_owner_only(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let (alice, bob) = (UserId::generate(), UserId::generate());
    let (mine, theirs, shared) = (memory_key(), memory_key(), memory_key());
    index
        .upsert(
            tenant,
            &space,
            vec![
                owned_by(mine, alice, axis(0, DIMS)),
                owned_by(theirs, bob, near(&axis(0, DIMS), 1, 0.1)),
                public(shared, near(&axis(0, DIMS), 2, 0.2)),
            ],
        )
        .await
        .unwrap();
    let hits = index
        .search(tenant, &space, &axis(0, DIMS), 10, &as_user(alice))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![mine, shared]);
    let hits = index
        .search(tenant, &space, &axis(0, DIMS), 10, &as_user(bob))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![theirs, shared]);
    let hits = index
        .search(tenant, &space, &axis(0, DIMS), 10, &anyone())
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![shared]);
}

pub async fn restricted_entries_need_one_of_their_roles(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let (hr, legal, open) = (chunk_key(), chunk_key(), chunk_key());
    index
        .upsert(
            tenant,
            &space,
            vec![
                restricted_to(hr, &["hr", "admin"], axis(0, DIMS)),
                restricted_to(legal, &["legal"], near(&axis(0, DIMS), 1, 0.1)),
                public(open, near(&axis(0, DIMS), 2, 0.2)),
            ],
        )
        .await
        .unwrap();
    let search = |filter: SearchFilter| async move {
        keys(
            &index
                .search(tenant, &space_a(), &axis(0, DIMS), 10, &filter)
                .await
                .unwrap(),
        )
    };
    assert_eq!(search(anyone()).await, vec![open]);
    assert_eq!(search(with_roles(&["hr"])).await, vec![hr, open]);
    assert_eq!(
        search(with_roles(&["admin", "legal"])).await,
        vec![hr, legal, open]
    );
    assert_eq!(search(with_roles(&["member"])).await, vec![open]);
}

pub async fn kinds_filter_selects_entry_kinds(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let (memory, chunk) = (memory_key(), chunk_key());
    index
        .upsert(
            tenant,
            &space,
            vec![public(memory, axis(0, DIMS)), public(chunk, axis(0, DIMS))],
        )
        .await
        .unwrap();
    let only = |kinds: Vec<EntryKind>| SearchFilter { kinds, ..anyone() };
    let found = |filter: SearchFilter| async move {
        sorted(keys(
            &index
                .search(tenant, &space_a(), &axis(0, DIMS), 10, &filter)
                .await
                .unwrap(),
        ))
    };
    assert_eq!(found(only(vec![EntryKind::Memory])).await, vec![memory]);
    assert_eq!(found(only(vec![EntryKind::Chunk])).await, vec![chunk]);
    assert_eq!(found(only(vec![])).await, sorted(vec![memory, chunk]));
    assert_eq!(
        found(only(vec![EntryKind::Chunk, EntryKind::Memory])).await,
        sorted(vec![memory, chunk])
    );
}

pub async fn a_selective_filter_still_fills_the_limit(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let someone = UserId::generate();
    // 300 private entries right next to the query, 6 visible ones far away.
    let mut entries: Vec<_> = (0..300u64)
        .map(|i| {
            owned_by(
                memory_key(),
                someone,
                near(
                    &axis(0, DIMS),
                    1 + (i as usize % 7),
                    0.01 * (i as f32 % 10.0),
                ),
            )
        })
        .collect();
    let visible: Vec<_> = (0..6).map(|_| memory_key()).collect();
    for (i, key) in visible.iter().enumerate() {
        entries.push(public(*key, near(&axis(5, DIMS), i % 5, 0.3)));
    }
    index.upsert(tenant, &space, entries).await.unwrap();
    let hits = index
        .search(tenant, &space, &axis(0, DIMS), 5, &anyone())
        .await
        .unwrap();
    assert_eq!(hits.len(), 5, "{hits:?}");
    assert!(hits.iter().all(|h| visible.contains(&h.key)));
    let hits = index
        .search(tenant, &space, &axis(0, DIMS), 50, &anyone())
        .await
        .unwrap();
    assert_eq!(sorted(keys(&hits)), sorted(visible.clone()));
    // Best first.
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "{hits:?}"
    );
}

pub async fn spaces_never_mix(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let (ka, kb, kw) = (memory_key(), memory_key(), memory_key());
    index
        .upsert(tenant, &space_a(), vec![public(ka, axis(0, DIMS))])
        .await
        .unwrap();
    index
        .upsert(tenant, &space_b(), vec![public(kb, axis(0, DIMS))])
        .await
        .unwrap();
    index
        .upsert(tenant, &space_a_wide(), vec![public(kw, axis(0, DIMS * 2))])
        .await
        .unwrap();
    let found = |space| async move {
        keys(
            &index
                .search(tenant, &space, &axis(0, space.dims), 10, &anyone())
                .await
                .unwrap(),
        )
    };
    assert_eq!(found(space_a()).await, vec![ka]);
    assert_eq!(found(space_b()).await, vec![kb]);
    assert_eq!(found(space_a_wide()).await, vec![kw]);
}

pub async fn wrong_dimensions_are_refused(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let good = public(memory_key(), axis(0, DIMS));
    let bad = public(memory_key(), vec![1.0; DIMS as usize + 1]);
    let error = index
        .upsert(tenant, &space, vec![good, bad])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Invalid { .. }), "{error:?}");
    assert!(
        error.to_string().contains("dimensions") || format!("{error:?}").contains("dimensions")
    );
    // Nothing of the refused batch was written.
    assert_eq!(index.status(tenant, &space).await.unwrap().entries, 0);
    let error = index
        .search(tenant, &space, &[1.0; 3], 10, &anyone())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Invalid { .. }), "{error:?}");
    let nan = public(memory_key(), vec![f32::NAN; DIMS as usize]);
    let error = index.upsert(tenant, &space, vec![nan]).await.unwrap_err();
    assert!(matches!(error, Error::Invalid { .. }), "{error:?}");
}

pub async fn searching_nothing_finds_nothing(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    assert!(
        index
            .search(tenant, &space, &axis(0, DIMS), 10, &anyone())
            .await
            .unwrap()
            .is_empty()
    );
    index
        .upsert(tenant, &space, vec![public(memory_key(), axis(0, DIMS))])
        .await
        .unwrap();
    assert!(
        index
            .search(tenant, &space, &axis(0, DIMS), 0, &anyone())
            .await
            .unwrap()
            .is_empty()
    );
    index.upsert(tenant, &space, vec![]).await.unwrap();
    assert_eq!(index.status(tenant, &space).await.unwrap().entries, 1);
}

pub async fn many_searches_at_once_all_succeed(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let entries: Vec<_> = (0..200u64)
        .map(|i| public(memory_key(), vector(i, DIMS)))
        .collect();
    index.upsert(tenant, &space, entries).await.unwrap();
    let filter = anyone();
    let searches = (0..64u64).map(|i| {
        let query = vector(i, DIMS);
        let (space, filter) = (&space, &filter);
        async move { index.search(tenant, space, &query, 10, filter).await }
    });
    for hits in futures::future::join_all(searches).await {
        assert_eq!(hits.unwrap().len(), 10);
    }
}

/// `count` entries of `kind` around `axis(0)`, some public, some private to
/// `owner`, some restricted to the role `hr`.
fn mixed_entries(
    kind: EntryKind,
    count: u64,
    seed: u64,
    owner: UserId,
) -> Vec<karen_domain::ports::VectorEntry> {
    (0..count)
        .map(|i| {
            let key = match kind {
                EntryKind::Memory => memory_key(),
                EntryKind::Chunk => chunk_key(),
            };
            let vector = near(&vector(seed + i, DIMS), 0, 2.0);
            match i % 3 {
                0 => public(key, vector),
                1 => owned_by(key, owner, vector),
                _ => restricted_to(key, &["hr"], vector),
            }
        })
        .collect()
}

pub async fn memories_and_passages_share_a_space_but_not_a_search(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let owner = UserId::generate();
    // Interleaved in one batch, many more memories than passages, all near
    // the same query.
    let mut entries = mixed_entries(EntryKind::Memory, 150, 0, owner);
    entries.extend(mixed_entries(EntryKind::Chunk, 30, 1_000, owner));
    entries.sort_by_key(|e| e.key.id);
    index.upsert(tenant, &space, entries.clone()).await.unwrap();
    let searcher = SearchFilter {
        roles: vec![role("hr")],
        ..as_user(owner)
    };
    for (kind, visible) in [(EntryKind::Memory, 150), (EntryKind::Chunk, 30)] {
        let filter = SearchFilter {
            kinds: vec![kind],
            ..searcher.clone()
        };
        let hits = index
            .search(tenant, &space, &axis(0, DIMS), 10, &filter)
            .await
            .unwrap();
        assert_eq!(hits.len(), 10, "{kind:?}: {hits:?}");
        assert!(
            hits.iter().all(|h| h.key.kind == kind),
            "{kind:?}: {hits:?}"
        );
        let all = index
            .search(tenant, &space, &axis(0, DIMS), 500, &filter)
            .await
            .unwrap();
        assert_eq!(all.len(), visible, "{kind:?}");
        assert!(all.iter().all(|h| h.key.kind == kind));
        // A searcher without the role nor the ownership sees the public third.
        let stranger = SearchFilter {
            kinds: vec![kind],
            ..anyone()
        };
        let public: Vec<EntryKey> = entries
            .iter()
            .filter(|e| e.key.kind == kind && e.access.owner.is_none() && e.access.roles.is_empty())
            .map(|e| e.key)
            .collect();
        let seen = index
            .search(tenant, &space, &axis(0, DIMS), 500, &stranger)
            .await
            .unwrap();
        assert_eq!(sorted(keys(&seen)), sorted(public), "{kind:?}");
    }
    // Another tenant's search finds none of them, of either kind.
    let filter = SearchFilter {
        kinds: vec![EntryKind::Chunk],
        ..searcher.clone()
    };
    assert!(
        index
            .search(TenantId::generate(), &space, &axis(0, DIMS), 10, &filter)
            .await
            .unwrap()
            .is_empty()
    );
    // Removing every passage leaves the memories alone.
    let chunks: Vec<EntryKey> = entries
        .iter()
        .filter(|e| e.key.kind == EntryKind::Chunk)
        .map(|e| e.key)
        .collect();
    index.remove(tenant, &chunks).await.unwrap();
    assert!(
        index
            .search(tenant, &space, &axis(0, DIMS), 10, &filter)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(index.status(tenant, &space).await.unwrap().entries, 150);
}

pub async fn a_search_of_both_kinds_ranks_them_together(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let (m0, c0, m1, c1) = (memory_key(), chunk_key(), memory_key(), chunk_key());
    index
        .upsert(
            tenant,
            &space,
            vec![
                public(m0, axis(0, DIMS)),
                public(c0, near(&axis(0, DIMS), 1, 0.2)),
                public(m1, near(&axis(0, DIMS), 2, 0.5)),
                public(c1, near(&axis(0, DIMS), 3, 0.9)),
                public(memory_key(), axis(4, DIMS)),
                public(chunk_key(), axis(5, DIMS)),
            ],
        )
        .await
        .unwrap();
    for kinds in [vec![], vec![EntryKind::Memory, EntryKind::Chunk]] {
        let filter = SearchFilter { kinds, ..anyone() };
        let hits = index
            .search(tenant, &space, &axis(0, DIMS), 4, &filter)
            .await
            .unwrap();
        assert_eq!(keys(&hits), vec![m0, c0, m1, c1]);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

pub async fn a_selective_filter_fills_the_limit_of_each_kind(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let (alice, bob) = (UserId::generate(), UserId::generate());
    // Bob's 300 memories and 100 passages restricted to `legal` lie right at
    // the query; Alice's 4 memories and the 3 open passages lie far off.
    let mut entries: Vec<_> = (0..300u64)
        .map(|i| {
            owned_by(
                memory_key(),
                bob,
                near(&axis(0, DIMS), 1 + (i as usize % 6), 0.05),
            )
        })
        .collect();
    entries.extend((0..100u64).map(|i| {
        restricted_to(
            chunk_key(),
            &["legal"],
            near(&axis(0, DIMS), 1 + (i as usize % 6), 0.04),
        )
    }));
    let mine: Vec<_> = (0..4).map(|_| memory_key()).collect();
    let open: Vec<_> = (0..3).map(|_| chunk_key()).collect();
    for (i, key) in mine.iter().enumerate() {
        entries.push(owned_by(*key, alice, near(&axis(7, DIMS), i, 0.3)));
    }
    for (i, key) in open.iter().enumerate() {
        entries.push(public(*key, near(&axis(6, DIMS), i, 0.3)));
    }
    index.upsert(tenant, &space, entries).await.unwrap();
    let search = |kinds: Vec<EntryKind>, limit: usize| {
        let filter = SearchFilter {
            kinds,
            ..as_user(alice)
        };
        async move {
            index
                .search(tenant, &space_a(), &axis(0, DIMS), limit, &filter)
                .await
                .unwrap()
        }
    };
    let hits = search(vec![EntryKind::Memory], 3).await;
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(hits.iter().all(|h| mine.contains(&h.key)));
    assert_eq!(
        sorted(keys(&search(vec![EntryKind::Memory], 10).await)),
        sorted(mine.clone())
    );
    assert_eq!(
        sorted(keys(&search(vec![EntryKind::Chunk], 10).await)),
        sorted(open.clone())
    );
    let both = search(vec![], 50).await;
    let mut expected = mine.clone();
    expected.extend(&open);
    assert_eq!(sorted(keys(&both)), sorted(expected));
    assert!(
        both.windows(2).all(|w| w[0].score >= w[1].score),
        "{both:?}"
    );
    let some = search(vec![], 5).await;
    assert_eq!(some.len(), 5, "{some:?}");
}

pub async fn changing_owner_or_roles_moves_an_entrys_visibility(index: &dyn VectorIndex) {
    let tenant = TenantId::generate();
    let space = space_a();
    let (alice, bob) = (UserId::generate(), UserId::generate());
    let key = memory_key();
    index
        .upsert(tenant, &space, vec![owned_by(key, alice, axis(0, DIMS))])
        .await
        .unwrap();
    let found = |user: UserId| async move {
        keys(
            &index
                .search(tenant, &space_a(), &axis(0, DIMS), 10, &as_user(user))
                .await
                .unwrap(),
        )
    };
    assert_eq!(found(alice).await, vec![key]);
    assert!(found(bob).await.is_empty());
    index
        .upsert(tenant, &space, vec![owned_by(key, bob, axis(0, DIMS))])
        .await
        .unwrap();
    assert!(found(alice).await.is_empty());
    assert_eq!(found(bob).await, vec![key]);
    index
        .upsert(
            tenant,
            &space,
            vec![restricted_to(key, &["hr"], axis(0, DIMS))],
        )
        .await
        .unwrap();
    assert!(found(bob).await.is_empty());
    let hits = index
        .search(tenant, &space, &axis(0, DIMS), 10, &with_roles(&["hr"]))
        .await
        .unwrap();
    assert_eq!(keys(&hits), vec![key]);
    assert_eq!(index.status(tenant, &space).await.unwrap().entries, 1);
}
