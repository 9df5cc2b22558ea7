//! Who sees what: tenants never see each other; owners, roles and kinds filter.

use karen_domain::UserId;
use karen_domain::ports::{EntryKind, SearchFilter};

use crate::support::{
    Fixture, anyone, chunk_key, entry, memory_key, private, restricted, search_keys, user_filter,
};

pub(super) async fn tenants_never_see_each_other(f: &Fixture) {
    let (alpha, bravo) = (f.tenant().await, f.tenant().await);
    let same_key = memory_key();
    let (a_only, b_only) = (chunk_key(), chunk_key());
    let identical = "Project Nightingale launch codes are in the vault";
    f.index
        .upsert(
            alpha,
            vec![
                entry(same_key, "alpha confidential salary table"),
                entry(a_only, identical),
            ],
        )
        .await
        .unwrap();
    f.index
        .upsert(
            bravo,
            vec![
                entry(same_key, "bravo confidential merger plan"),
                entry(b_only, identical),
            ],
        )
        .await
        .unwrap();
    // Identical texts: each tenant finds its own entry only.
    assert_eq!(
        search_keys(&*f.index, alpha, "nightingale vault", &anyone()).await,
        [a_only]
    );
    assert_eq!(
        search_keys(&*f.index, bravo, "nightingale vault", &anyone()).await,
        [b_only]
    );
    // The same key in both tenants holds each tenant's own text.
    assert!(
        search_keys(&*f.index, alpha, "merger", &anyone())
            .await
            .is_empty()
    );
    assert!(
        search_keys(&*f.index, bravo, "salary", &anyone())
            .await
            .is_empty()
    );
    // Removing in one tenant leaves the other's entry of the same key.
    f.index.remove(bravo, &[same_key]).await.unwrap();
    assert_eq!(
        search_keys(&*f.index, alpha, "confidential", &anyone()).await,
        [same_key]
    );
    let mut alpha_keys = vec![same_key, a_only];
    alpha_keys.sort();
    assert_eq!(f.index.keys(alpha).await.unwrap(), alpha_keys);
    assert_eq!(f.index.keys(bravo).await.unwrap(), [b_only]);
    assert_eq!(f.index.status(alpha).await.unwrap().entries, 2);
    assert_eq!(f.index.status(bravo).await.unwrap().entries, 1);
    // A tenant that indexed nothing sees nothing.
    let charlie = f.tenant().await;
    assert!(
        search_keys(&*f.index, charlie, "nightingale confidential", &anyone())
            .await
            .is_empty()
    );
}

pub(super) async fn private_entries_are_seen_by_their_owner_only(f: &Fixture) {
    let tenant = f.tenant().await;
    let (owner, other) = (UserId::generate(), UserId::generate());
    let (mine, shared) = (memory_key(), memory_key());
    f.index
        .upsert(
            tenant,
            vec![
                private(mine, owner, "my passport number is in the drawer"),
                entry(shared, "the office drawer sticks"),
            ],
        )
        .await
        .unwrap();
    let mut both = vec![mine, shared];
    let mut found = search_keys(&*f.index, tenant, "drawer", &user_filter(owner, &[])).await;
    both.sort();
    found.sort();
    assert_eq!(found, both);
    assert_eq!(
        search_keys(&*f.index, tenant, "drawer", &user_filter(other, &[])).await,
        [shared]
    );
    assert!(
        search_keys(
            &*f.index,
            tenant,
            "passport",
            &user_filter(other, &["admin", "owner"])
        )
        .await
        .is_empty(),
        "roles do not open another user's private entry"
    );
}

pub(super) async fn restricted_entries_need_one_of_their_roles(f: &Fixture) {
    let tenant = f.tenant().await;
    let user = UserId::generate();
    let (finance, open) = (chunk_key(), chunk_key());
    f.index
        .upsert(
            tenant,
            vec![
                restricted(
                    finance,
                    &["finance", "board"],
                    "budget forecast for next year",
                ),
                entry(open, "public budget guidelines"),
            ],
        )
        .await
        .unwrap();
    let sees = |roles: &'static [&'static str]| {
        let filter = user_filter(user, roles);
        let index = f.index.clone();
        async move {
            let mut keys = search_keys(&*index, tenant, "budget", &filter).await;
            keys.sort();
            keys
        }
    };
    assert_eq!(sees(&[]).await, [open]);
    assert_eq!(sees(&["hr"]).await, [open]);
    let mut both = vec![finance, open];
    both.sort();
    assert_eq!(sees(&["finance"]).await, both);
    assert_eq!(sees(&["hr", "board"]).await, both);
}

pub(super) async fn kinds_filter_what_is_returned(f: &Fixture) {
    let tenant = f.tenant().await;
    let (memory, chunk) = (memory_key(), chunk_key());
    f.index
        .upsert(
            tenant,
            vec![
                entry(memory, "holiday in Lisbon"),
                entry(chunk, "Lisbon office address"),
            ],
        )
        .await
        .unwrap();
    let with_kinds = |kinds: Vec<EntryKind>| SearchFilter { kinds, ..anyone() };
    assert_eq!(
        search_keys(
            &*f.index,
            tenant,
            "lisbon",
            &with_kinds(vec![EntryKind::Memory])
        )
        .await,
        [memory]
    );
    assert_eq!(
        search_keys(
            &*f.index,
            tenant,
            "lisbon",
            &with_kinds(vec![EntryKind::Chunk])
        )
        .await,
        [chunk]
    );
    for kinds in [vec![], vec![EntryKind::Memory, EntryKind::Chunk]] {
        let mut found = search_keys(&*f.index, tenant, "lisbon", &with_kinds(kinds)).await;
        found.sort();
        let mut both = vec![memory, chunk];
        both.sort();
        assert_eq!(found, both);
    }
}
