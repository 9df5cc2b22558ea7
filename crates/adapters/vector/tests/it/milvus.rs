//! The contract against Milvus at `KAREN_TEST_MILVUS_URL` (default
//! `http://127.0.0.1:19530`; `scripts/milvus-lite.sh` starts one). These tests
//! fail, never skip, when Milvus is unreachable.

use std::sync::Arc;
use std::time::Duration;

use karen_domain::Error;
use karen_vector::{MilvusConfig, MilvusVectorIndex};

use crate::contract::{Fixture, vector_index_contract};

fn url() -> String {
    std::env::var("KAREN_TEST_MILVUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19530".to_owned())
}

async fn fixture() -> Fixture {
    let config = MilvusConfig {
        collection_prefix: "karen_test".to_owned(),
        num_partitions: 4,
        timeout: Duration::from_secs(30),
        ..MilvusConfig::new(url())
    };
    let index = MilvusVectorIndex::connect(config)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Milvus is not reachable at {} (run scripts/milvus-lite.sh): {e}",
                url()
            )
        });
    Fixture {
        index: Arc::new(index),
        _keep: None,
    }
}

vector_index_contract!(fixture);

#[tokio::test]
async fn an_unreachable_server_is_reported_as_unavailable() {
    let config = MilvusConfig {
        timeout: Duration::from_secs(2),
        ..MilvusConfig::new("http://127.0.0.1:9")
    };
    let error = match MilvusVectorIndex::connect(config).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(error) => error,
    };
    assert!(
        matches!(
            error,
            Error::Unavailable {
                component: "milvus",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_collection_prefix_that_is_not_a_name_is_refused() {
    let config = MilvusConfig {
        collection_prefix: "karen\"; drop".to_owned(),
        ..MilvusConfig::new(url())
    };
    assert!(matches!(
        MilvusVectorIndex::connect(config).await,
        Err(Error::Invalid { .. })
    ));
}
