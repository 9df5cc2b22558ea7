//! What users type: query syntax of other engines, attempts to reach the
//! filters, empty and huge queries, non-ASCII text, inflections.

use karen_domain::UserId;

use crate::support::{
    Fixture, anyone, chunk_key, entry, memory_key, private, restricted, search_keys, user_filter,
};

pub(super) async fn query_syntax_is_just_words(f: &Fixture) {
    let tenant = f.tenant().await;
    let recipe = memory_key();
    let other = chunk_key();
    f.index
        .upsert(
            tenant,
            vec![
                entry(recipe, "grandmother's secret recipe uses cardamom"),
                entry(other, "the shed needs a new roof"),
            ],
        )
        .await
        .unwrap();
    // Each contains "secret" or "cardamom" as a word, wrapped in syntax of
    // some query language: it must match the recipe, and only it.
    let matching = [
        r#""secret recipe""#,
        r#""secret"#,
        "text:secret",
        "key:memory secret",
        "secret AND nothing",
        "secret OR",
        "NOT secret",
        "-secret",
        "secret -recipe",
        "+secret",
        "(secret)",
        "((secret",
        "secr* cardamom",
        "cardamom~2",
        "cardamom^10",
        "[secret TO zzz]",
        "{secret}",
        "secret'",
        "grandmother's",
        r"secret\",
        r"\secret",
        "secret:*",
        "secret & | ! <-> cardamom",
        "'); DROP TABLE text_entries; -- secret",
        "secret\0cardamom",
    ];
    for query in matching {
        assert_eq!(
            search_keys(&*f.index, tenant, query, &anyone()).await,
            [recipe],
            "query {query:?}"
        );
    }
    // Pure syntax matches nothing (in particular, `*` is not "everything").
    for query in [
        "*", "?", "\"", "'", "\\", "()", ":", "*:*", "-", "+", "&", "|", "!", "''", "\"\"", "AND",
        "OR", "NOT",
    ] {
        assert!(
            search_keys(&*f.index, tenant, query, &anyone())
                .await
                .is_empty(),
            "query {query:?}"
        );
    }
    // The index is intact after all that.
    assert_eq!(f.index.status(tenant).await.unwrap().entries, 2);
}

pub(super) async fn filters_cannot_be_bypassed_from_the_query(f: &Fixture) {
    let tenant = f.tenant().await;
    let owner = UserId::generate();
    let (mine, finance) = (memory_key(), chunk_key());
    f.index
        .upsert(
            tenant,
            vec![
                private(mine, owner, "diary entry about the secret"),
                restricted(finance, &["finance"], "secret acquisition target"),
            ],
        )
        .await
        .unwrap();
    let outsider = UserId::generate();
    for query in [
        format!("owner:{owner} secret"),
        format!("owner:{owner} OR secret"),
        "roles:finance secret".to_owned(),
        "restricted:0 secret".to_owned(),
        "kind:memory secret".to_owned(),
        "secret OR owner:-".to_owned(),
        "secret OR 1=1".to_owned(),
    ] {
        assert!(
            search_keys(&*f.index, tenant, &query, &user_filter(outsider, &[]))
                .await
                .is_empty(),
            "query {query:?} leaked"
        );
    }
}

pub(super) async fn long_empty_and_zero_limit_queries(f: &Fixture) {
    let tenant = f.tenant().await;
    let key = memory_key();
    f.index
        .upsert(tenant, vec![entry(key, "zebra crossing near the school")])
        .await
        .unwrap();
    for query in ["", " ", "\t\n  \r", "\u{3000}"] {
        assert!(
            f.index
                .search(tenant, query, 10, &anyone())
                .await
                .unwrap()
                .is_empty(),
            "query {query:?}"
        );
    }
    assert!(
        f.index
            .search(tenant, "zebra", 0, &anyone())
            .await
            .unwrap()
            .is_empty()
    );
    // A huge query (a pasted document) works; its first words count.
    let long = format!("zebra {}", "lorem ipsum dolor sit amet ".repeat(20_000));
    assert_eq!(
        search_keys(&*f.index, tenant, &long, &anyone()).await,
        [key]
    );
    let one_word = "z".repeat(100_000);
    assert!(
        search_keys(&*f.index, tenant, &one_word, &anyone())
            .await
            .is_empty()
    );
    // A huge limit is fine.
    let hits = f
        .index
        .search(tenant, "zebra", usize::MAX, &anyone())
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
}

pub(super) async fn non_ascii_text_is_searchable(f: &Fixture) {
    let tenant = f.tenant().await;
    let german = memory_key();
    let russian = memory_key();
    let japanese = chunk_key();
    let emoji = chunk_key();
    f.index
        .upsert(
            tenant,
            vec![
                entry(german, "Grüße aus München"),
                entry(russian, "Привет из Москвы"),
                entry(japanese, "東京 タワー の 夜景"),
                entry(emoji, "🎉 birthday party 🎂 tomorrow"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        search_keys(&*f.index, tenant, "münchen", &anyone()).await,
        [german]
    );
    assert_eq!(
        search_keys(&*f.index, tenant, "ПРИВЕТ", &anyone()).await,
        [russian]
    );
    assert_eq!(
        search_keys(&*f.index, tenant, "東京", &anyone()).await,
        [japanese]
    );
    assert_eq!(
        search_keys(&*f.index, tenant, "🎉 party", &anyone()).await,
        [emoji]
    );
    assert!(
        search_keys(&*f.index, tenant, "🎉", &anyone())
            .await
            .is_empty()
    );
}

pub(super) async fn english_words_match_their_inflections(f: &Fixture) {
    let tenant = f.tenant().await;
    let key = memory_key();
    f.index
        .upsert(tenant, vec![entry(key, "She was running with three dogs")])
        .await
        .unwrap();
    assert_eq!(
        search_keys(&*f.index, tenant, "dog runs", &anyone()).await,
        [key]
    );
}
