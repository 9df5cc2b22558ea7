//! Vectors, entries and filters for the tests.

use karen_domain::ports::{
    EntryAccess, EntryKey, EntryKind, SearchFilter, VectorEntry, VectorSpace,
};
use karen_domain::{RoleName, UserId};
use uuid::Uuid;

/// Dims of the test spaces: small, so Milvus Lite stays quick.
pub const DIMS: u32 = 8;

pub fn space_a() -> VectorSpace {
    VectorSpace {
        model: "karen-test-model-a".into(),
        dims: DIMS,
    }
}

/// Same dims as `space_a`, another model.
pub fn space_b() -> VectorSpace {
    VectorSpace {
        model: "karen-test-model-b".into(),
        dims: DIMS,
    }
}

/// Same model as `space_a`, other dims.
pub fn space_a_wide() -> VectorSpace {
    VectorSpace {
        model: "karen-test-model-a".into(),
        dims: DIMS * 2,
    }
}

/// A deterministic pseudo-random vector (splitmix64).
pub fn vector(seed: u64, dims: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// The unit vector along one axis.
pub fn axis(i: usize, dims: u32) -> Vec<f32> {
    let mut v = vec![0.0; dims as usize];
    v[i] = 1.0;
    v
}

/// `base` nudged slightly towards `axis(i)`.
pub fn near(base: &[f32], i: usize, amount: f32) -> Vec<f32> {
    let mut v = base.to_vec();
    v[i] += amount;
    v
}

pub fn memory_key() -> EntryKey {
    EntryKey::new(EntryKind::Memory, Uuid::new_v4())
}

pub fn chunk_key() -> EntryKey {
    EntryKey::new(EntryKind::Chunk, Uuid::new_v4())
}

pub fn public(key: EntryKey, vector: Vec<f32>) -> VectorEntry {
    VectorEntry {
        key,
        access: EntryAccess::default(),
        vector,
    }
}

pub fn owned_by(key: EntryKey, owner: UserId, vector: Vec<f32>) -> VectorEntry {
    VectorEntry {
        key,
        access: EntryAccess {
            owner: Some(owner),
            ..EntryAccess::default()
        },
        vector,
    }
}

pub fn restricted_to(key: EntryKey, roles: &[&str], vector: Vec<f32>) -> VectorEntry {
    VectorEntry {
        key,
        access: EntryAccess {
            owner: None,
            roles: roles.iter().map(|r| role(r)).collect(),
            document: Some(Uuid::new_v4()),
        },
        vector,
    }
}

pub fn role(name: &str) -> RoleName {
    RoleName::parse(name).unwrap()
}

/// A searcher with no roles who wants every kind.
pub fn anyone() -> SearchFilter {
    SearchFilter {
        kinds: vec![],
        user: UserId::generate(),
        roles: vec![],
    }
}

pub fn as_user(user: UserId) -> SearchFilter {
    SearchFilter { user, ..anyone() }
}

pub fn with_roles(roles: &[&str]) -> SearchFilter {
    SearchFilter {
        roles: roles.iter().map(|r| role(r)).collect(),
        ..anyone()
    }
}

pub fn sorted(mut keys: Vec<EntryKey>) -> Vec<EntryKey> {
    keys.sort();
    keys
}
