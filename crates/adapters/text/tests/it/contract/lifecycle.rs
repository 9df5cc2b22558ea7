//! Entries come, change and go: upsert, replace, remove, keys, status, purge,
//! and ranking.

use karen_domain::UserId;
use karen_domain::ports::{EntryKey, EntryKind};

use crate::support::{
    Fixture, anyone, chunk_key, entry, memory_key, private, search_keys, user_filter,
};

pub(super) async fn upsert_then_search_finds_the_entry(f: &Fixture) {
    let tenant = f.tenant().await;
    let memory = memory_key();
    let chunk = chunk_key();
    f.index
        .upsert(
            tenant,
            vec![
                entry(memory, "The user prefers green tea in the morning"),
                entry(chunk, "Quarterly revenue grew by twelve percent"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        search_keys(&*f.index, tenant, "green tea", &anyone()).await,
        [memory]
    );
    assert_eq!(
        search_keys(&*f.index, tenant, "revenue", &anyone()).await,
        [chunk]
    );
    assert!(
        search_keys(&*f.index, tenant, "submarine", &anyone())
            .await
            .is_empty()
    );
    let hits = f
        .index
        .search(tenant, "revenue percent", 10, &anyone())
        .await
        .unwrap();
    assert!(hits[0].score > 0.0, "{hits:?}");
    // An empty batch is a no-op.
    f.index.upsert(tenant, Vec::new()).await.unwrap();
}

pub(super) async fn upsert_replaces_by_key(f: &Fixture) {
    let tenant = f.tenant().await;
    let key = memory_key();
    let owner = UserId::generate();
    f.index
        .upsert(tenant, vec![entry(key, "likes mountains")])
        .await
        .unwrap();
    f.index
        .upsert(tenant, vec![private(key, owner, "likes oceans")])
        .await
        .unwrap();
    assert!(
        search_keys(&*f.index, tenant, "mountains", &user_filter(owner, &[]))
            .await
            .is_empty(),
        "the old text still matches"
    );
    assert_eq!(
        search_keys(&*f.index, tenant, "oceans", &user_filter(owner, &[])).await,
        [key]
    );
    assert!(
        search_keys(&*f.index, tenant, "oceans", &anyone())
            .await
            .is_empty(),
        "the new access rules apply"
    );
    assert_eq!(f.index.keys(tenant).await.unwrap(), [key]);
    assert_eq!(f.index.status(tenant).await.unwrap().entries, 1);
}

pub(super) async fn the_last_entry_of_a_key_in_a_batch_wins(f: &Fixture) {
    let tenant = f.tenant().await;
    let key = chunk_key();
    f.index
        .upsert(
            tenant,
            vec![entry(key, "first version"), entry(key, "second edition")],
        )
        .await
        .unwrap();
    assert!(
        search_keys(&*f.index, tenant, "first", &anyone())
            .await
            .is_empty()
    );
    assert_eq!(
        search_keys(&*f.index, tenant, "edition", &anyone()).await,
        [key]
    );
    assert_eq!(f.index.status(tenant).await.unwrap().entries, 1);
}

pub(super) async fn remove_deletes_and_ignores_unknown_keys(f: &Fixture) {
    let tenant = f.tenant().await;
    let (kept, removed) = (memory_key(), chunk_key());
    f.index
        .upsert(
            tenant,
            vec![entry(kept, "alpine lake"), entry(removed, "alpine meadow")],
        )
        .await
        .unwrap();
    f.index
        .remove(tenant, &[removed, memory_key(), chunk_key()])
        .await
        .unwrap();
    assert_eq!(
        search_keys(&*f.index, tenant, "alpine", &anyone()).await,
        [kept]
    );
    // Same id, other kind: a different key, left alone.
    f.index
        .remove(tenant, &[EntryKey::new(EntryKind::Chunk, kept.id)])
        .await
        .unwrap();
    assert_eq!(f.index.keys(tenant).await.unwrap(), [kept]);
    f.index.remove(tenant, &[]).await.unwrap();
    // Removing from a tenant that never indexed anything is fine too.
    let empty = f.tenant().await;
    f.index.remove(empty, &[kept]).await.unwrap();
}

pub(super) async fn keys_and_status_follow_the_entries(f: &Fixture) {
    let tenant = f.tenant().await;
    assert!(f.index.keys(tenant).await.unwrap().is_empty());
    assert_eq!(f.index.status(tenant).await.unwrap().entries, 0);
    let mut expected: Vec<_> = (0..7)
        .map(|i| {
            if i % 2 == 0 {
                memory_key()
            } else {
                chunk_key()
            }
        })
        .collect();
    let entries = expected
        .iter()
        .enumerate()
        .map(|(i, key)| entry(*key, &format!("entry number {i}")))
        .collect();
    f.index.upsert(tenant, entries).await.unwrap();
    expected.sort();
    assert_eq!(f.index.keys(tenant).await.unwrap(), expected);
    assert_eq!(f.index.status(tenant).await.unwrap().entries, 7);
    f.index.remove(tenant, &expected[..3]).await.unwrap();
    assert_eq!(f.index.keys(tenant).await.unwrap(), expected[3..]);
    assert_eq!(f.index.status(tenant).await.unwrap().entries, 4);
}

pub(super) async fn purge_tenant_removes_everything_of_that_tenant_only(f: &Fixture) {
    let (alpha, bravo) = (f.tenant().await, f.tenant().await);
    let (a, b) = (memory_key(), memory_key());
    f.index
        .upsert(alpha, vec![entry(a, "shared words here")])
        .await
        .unwrap();
    f.index
        .upsert(bravo, vec![entry(b, "shared words here")])
        .await
        .unwrap();
    f.index.purge_tenant(alpha).await.unwrap();
    assert!(f.index.keys(alpha).await.unwrap().is_empty());
    assert_eq!(f.index.status(alpha).await.unwrap().entries, 0);
    assert!(
        search_keys(&*f.index, alpha, "shared", &anyone())
            .await
            .is_empty()
    );
    assert_eq!(
        search_keys(&*f.index, bravo, "shared", &anyone()).await,
        [b]
    );
    // Purging twice, or a tenant with nothing, is fine.
    f.index.purge_tenant(alpha).await.unwrap();
    f.index.purge_tenant(f.tenant().await).await.unwrap();
    // The tenant can index again afterwards.
    f.index
        .upsert(alpha, vec![entry(a, "fresh start")])
        .await
        .unwrap();
    assert_eq!(search_keys(&*f.index, alpha, "fresh", &anyone()).await, [a]);
}

pub(super) async fn better_matches_rank_first(f: &Fixture) {
    let tenant = f.tenant().await;
    let both = chunk_key();
    let once = chunk_key();
    let thrice = chunk_key();
    let neither = chunk_key();
    f.index
        .upsert(
            tenant,
            vec![
                entry(once, "the orchard has apple trees near a river"),
                entry(both, "the orchard has apple trees near a pear field"),
                entry(neither, "the garage holds two bicycles and a ladder"),
            ],
        )
        .await
        .unwrap();
    let hits = f
        .index
        .search(tenant, "apple pear", 10, &anyone())
        .await
        .unwrap();
    let keys: Vec<_> = hits.iter().map(|h| h.key).collect();
    assert_eq!(keys, [both, once], "{hits:?}");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    f.index
        .upsert(
            tenant,
            vec![entry(
                thrice,
                "kiwi smoothie, kiwi salad and kiwi jam for the party",
            )],
        )
        .await
        .unwrap();
    let with_kiwi = chunk_key();
    f.index
        .upsert(
            tenant,
            vec![entry(
                with_kiwi,
                "one kiwi smoothie, then lemonade and cake for the party",
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        search_keys(&*f.index, tenant, "kiwi", &anyone()).await,
        [thrice, with_kiwi]
    );
    // The limit is respected.
    let hits = f
        .index
        .search(tenant, "orchard party", 2, &anyone())
        .await
        .unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
}
