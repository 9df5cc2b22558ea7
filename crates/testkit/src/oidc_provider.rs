//! A test OpenID Connect provider, served on a loopback port: discovery,
//! a JWKS with an RSA and an EC key, an authorize endpoint that approves the
//! configured test identity at once (redirecting back with `code` and
//! `state`), and a token endpoint that checks the client secret and the PKCE
//! verifier and answers with a real ID token signed RS256 or ES256. Tests
//! switch its behaviour to produce every kind of bad answer: a token signed
//! by an unpublished key, the wrong `iss` or `aud`, an expired token, a wrong
//! or missing `nonce`, `alg: none` and HS256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use karen_domain::clock::Clock;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::TestTenant;

/// The client Karen is registered as at the test provider.
pub const OIDC_CLIENT_ID: &str = "karen-test-client";
/// Its secret.
pub const OIDC_CLIENT_SECRET: &str = "test-client-secret-of-some-length";

/// Who the provider says signs in.
#[derive(Debug, Clone)]
pub struct TestIdentity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

impl TestIdentity {
    /// A person with a verified email in `groups`.
    pub fn new(subject: &str, email: &str, groups: &[&str]) -> Self {
        Self {
            subject: subject.to_owned(),
            email: Some(email.to_owned()),
            email_verified: true,
            name: Some(format!("Test {subject}")),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }
}

/// How the next ID tokens are made wrong (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// A correct token.
    None,
    /// Signed by a key that is not in the JWKS (under a published `kid`).
    OtherKey,
    Issuer(String),
    Audience(String),
    /// `exp` this long before now.
    Expired(Duration),
    /// Some other nonce.
    WrongNonce,
    /// No nonce at all.
    MissingNonce,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 keyed with the RSA key's public modulus (algorithm confusion).
    Hs256,
}

/// Which key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Rs256,
    Es256,
}

struct Grant {
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
    identity: TestIdentity,
}

struct Behaviour {
    identity: TestIdentity,
    alg: SigningAlg,
    tamper: Tamper,
    /// The token endpoint answers 503 (the provider is down for maintenance).
    token_outage: bool,
}

struct Provider {
    issuer: String,
    clock: Arc<dyn Clock>,
    /// The published RSA key and its `kid` (replaced by [`TestOidcProvider::rotate_rsa_key`]).
    rsa: Mutex<(String, EncodingKey)>,
    rsa_public: Vec<u8>,
    rogue_rsa: EncodingKey,
    ec: EncodingKey,
    jwks: Mutex<JwkSet>,
    behaviour: Mutex<Behaviour>,
    grants: Mutex<HashMap<String, Grant>>,
    token_requests: Mutex<u32>,
    discovery_requests: Mutex<u32>,
    jwks_requests: Mutex<u32>,
}

/// A running test provider (stops when dropped).
pub struct TestOidcProvider {
    /// The issuer URL (`http://127.0.0.1:<port>`).
    pub issuer: String,
    provider: Arc<Provider>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestOidcProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (what
/// jsonwebtoken's RSA keys are made of).
fn pkcs1_of_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    fn element(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = if input[1] < 0x80 {
            (usize::from(input[1]), 2)
        } else {
            let n = usize::from(input[1] & 0x7f);
            let len = input[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (_, info, _) = element(pkcs8);
    let (_, _, rest) = element(info); // version
    let (_, _, rest) = element(rest); // algorithm
    let (tag, key, _) = element(rest);
    assert_eq!(tag, 0x04, "PKCS#8 private key is an OCTET STRING");
    key.to_vec()
}

fn rsa_key() -> EncodingKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let pkcs8 = pair.as_der().expect("PKCS#8");
    EncodingKey::from_rsa_der(&pkcs1_of_pkcs8(pkcs8.as_ref()))
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("JWK");
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk
}

impl TestOidcProvider {
    /// Starts a provider whose tokens are dated by `clock` (the server's).
    pub async fn start(clock: Arc<dyn Clock>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let rsa = rsa_key();
        let rogue_rsa = rsa_key();
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("EC key");
        let ec = EncodingKey::from_ec_der(ec_pkcs8.as_ref());
        let rsa_jwk = jwk(&rsa, Algorithm::RS256, "rsa-1");
        let rsa_public = match &rsa_jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(p) => {
                URL_SAFE_NO_PAD.decode(&p.n).expect("modulus")
            }
            _ => unreachable!("an RSA key"),
        };
        let jwks = JwkSet {
            keys: vec![rsa_jwk, jwk(&ec, Algorithm::ES256, "ec-1")],
        };
        let provider = Arc::new(Provider {
            issuer: issuer.clone(),
            clock,
            rsa: Mutex::new(("rsa-1".into(), rsa)),
            rsa_public,
            rogue_rsa,
            ec,
            jwks: Mutex::new(jwks),
            behaviour: Mutex::new(Behaviour {
                identity: TestIdentity::new("user-1", "user1@idp.test", &["engineering"]),
                alg: SigningAlg::Rs256,
                tamper: Tamper::None,
                token_outage: false,
            }),
            grants: Mutex::new(HashMap::new()),
            token_requests: Mutex::new(0),
            discovery_requests: Mutex::new(0),
            jwks_requests: Mutex::new(0),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route(
                "/redirecting/.well-known/openid-configuration",
                get(redirecting_discovery),
            )
            .route("/jwks", get(serve_jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(provider.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            issuer,
            provider,
            server,
        }
    }

    /// The identity the authorize endpoint approves from now on.
    pub fn sign_in_as(&self, identity: TestIdentity) {
        self.provider.behaviour.lock().unwrap().identity = identity;
    }

    /// The key that signs the next ID tokens.
    pub fn sign_with(&self, alg: SigningAlg) {
        self.provider.behaviour.lock().unwrap().alg = alg;
    }

    /// How the next ID tokens are made wrong.
    pub fn tamper(&self, tamper: Tamper) {
        self.provider.behaviour.lock().unwrap().tamper = tamper;
    }

    /// Whether the token endpoint answers every exchange with a 503.
    pub fn token_outage(&self, down: bool) {
        self.provider.behaviour.lock().unwrap().token_outage = down;
    }

    /// How many code exchanges the token endpoint has answered.
    pub fn token_requests(&self) -> u32 {
        *self.provider.token_requests.lock().unwrap()
    }

    /// How many times the discovery document and the key set were read.
    pub fn document_requests(&self) -> (u32, u32) {
        (
            *self.provider.discovery_requests.lock().unwrap(),
            *self.provider.jwks_requests.lock().unwrap(),
        )
    }

    /// Replaces the RSA signing key by a new one under a new `kid` (the old
    /// one leaves the key set), as a provider's key rotation does.
    pub fn rotate_rsa_key(&self, kid: &str) {
        let key = rsa_key();
        let published = jwk(&key, Algorithm::RS256, kid);
        let mut jwks = self.provider.jwks.lock().unwrap();
        jwks.keys
            .retain(|k| k.common.key_id.as_deref() == Some("ec-1"));
        jwks.keys.push(published);
        *self.provider.rsa.lock().unwrap() = (kid.to_owned(), key);
    }
}

async fn discovery(State(p): State<Arc<Provider>>) -> Response {
    *p.discovery_requests.lock().unwrap() += 1;
    axum::Json(json!({
        "issuer": p.issuer,
        "authorization_endpoint": format!("{}/authorize", p.issuer),
        "token_endpoint": format!("{}/token", p.issuer),
        "jwks_uri": format!("{}/jwks", p.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
    .into_response()
}

async fn redirecting_discovery(State(p): State<Arc<Provider>>) -> Response {
    let location = format!("{}/.well-known/openid-configuration", p.issuer);
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn serve_jwks(State(p): State<Arc<Provider>>) -> Response {
    *p.jwks_requests.lock().unwrap() += 1;
    let jwks = serde_json::to_value(&*p.jwks.lock().unwrap()).expect("jwks");
    axum::Json(jwks).into_response()
}

fn random_code() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn authorize(
    State(p): State<Arc<Provider>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| query.get(name).cloned();
    let ok = param("response_type").as_deref() == Some("code")
        && param("client_id").as_deref() == Some(OIDC_CLIENT_ID)
        && param("code_challenge_method").as_deref() == Some("S256")
        && param("scope").is_some_and(|s| s.split(' ').any(|s| s == "openid"));
    let (Some(redirect_uri), Some(state), Some(challenge), true) = (
        param("redirect_uri"),
        param("state"),
        param("code_challenge"),
        ok,
    ) else {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    };
    let code = random_code();
    let identity = p.behaviour.lock().unwrap().identity.clone();
    p.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            nonce: param("nonce"),
            challenge,
            redirect_uri: redirect_uri.clone(),
            identity,
        },
    );
    let mut location = url::Url::parse(&redirect_uri).expect("redirect uri");
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

fn token_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn client_authenticated(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(encoded) else {
        return false;
    };
    let text = String::from_utf8(decoded).unwrap_or_default();
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    text.split_once(':').is_some_and(|(id, secret)| {
        decode(id) == OIDC_CLIENT_ID && decode(secret) == OIDC_CLIENT_SECRET
    })
}

async fn token(State(p): State<Arc<Provider>>, headers: HeaderMap, body: String) -> Response {
    *p.token_requests.lock().unwrap() += 1;
    if p.behaviour.lock().unwrap().token_outage {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    if !client_authenticated(&headers) {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // A code is usable once, whatever the outcome.
    let grant = form
        .get("code")
        .and_then(|code| p.grants.lock().unwrap().remove(code));
    let Some(grant) = grant else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    if challenge != grant.challenge || form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let id_token = p.id_token(&grant);
    axum::Json(json!({
        "access_token": random_code(),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

impl Provider {
    fn id_token(&self, grant: &Grant) -> String {
        let behaviour = self.behaviour.lock().unwrap();
        let now = self.clock.now().unix_timestamp();
        let identity = &grant.identity;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": identity.subject,
            "aud": OIDC_CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "email": identity.email,
            "email_verified": identity.email_verified,
            "name": identity.name,
            "groups": identity.groups,
        });
        if let Some(nonce) = &grant.nonce {
            claims["nonce"] = json!(nonce);
        }
        match &behaviour.tamper {
            Tamper::Issuer(issuer) => claims["iss"] = json!(issuer),
            Tamper::Audience(audience) => claims["aud"] = json!(audience),
            Tamper::Expired(by) => {
                let exp = now - i64::try_from(by.as_secs()).unwrap();
                claims["exp"] = json!(exp);
                claims["iat"] = json!(exp - 300);
            }
            Tamper::WrongNonce => claims["nonce"] = json!("not-the-nonce-of-this-login"),
            Tamper::MissingNonce => {
                claims.as_object_mut().unwrap().remove("nonce");
            }
            _ => {}
        }
        let encode_part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        match (&behaviour.tamper, behaviour.alg) {
            (Tamper::AlgNone, _) => format!(
                "{}.{}.",
                encode_part(&json!({"alg": "none", "typ": "JWT"})),
                encode_part(&claims)
            ),
            (Tamper::Hs256, _) => {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("rsa-1".into());
                let key = EncodingKey::from_secret(&self.rsa_public);
                jsonwebtoken::encode(&header, &claims, &key).unwrap()
            }
            (Tamper::OtherKey, _) => {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some("rsa-1".into());
                jsonwebtoken::encode(&header, &claims, &self.rogue_rsa).unwrap()
            }
            (_, SigningAlg::Rs256) => {
                let rsa = self.rsa.lock().unwrap();
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(rsa.0.clone());
                jsonwebtoken::encode(&header, &claims, &rsa.1).unwrap()
            }
            (_, SigningAlg::Es256) => {
                let mut header = Header::new(Algorithm::ES256);
                header.kid = Some("ec-1".into());
                jsonwebtoken::encode(&header, &claims, &self.ec).unwrap()
            }
        }
    }
}

impl crate::TestApp {
    /// Writes an OIDC connection of `tenant`, a pending login through it, the
    /// identity linking `user` to it and a consumed SAML assertion, as a
    /// configured and used SSO would.
    pub async fn record_sso_rows(&self, tenant: &TestTenant, user: Uuid) {
        use karen_domain::ports::Store as _;
        use karen_domain::sso::{RoleMapping, SsoConnection, SsoIdentity, SsoKind, SsoLoginState};
        let id = karen_domain::TenantId::from_uuid(tenant.id);
        let now = karen_domain::Clock::now(self.clock.as_ref());
        let scope = karen_domain::TenantScope::system(id, karen_domain::SystemReason::Cli);
        let mut tx = self
            .karen
            .store
            .tenant(scope)
            .await
            .expect("tenant transaction");
        let connection = SsoConnection {
            id: karen_domain::SsoConnectionId::generate(),
            tenant_id: id,
            kind: SsoKind::Oidc,
            config: json!({"issuer": "https://idp.example.com", "client_id": "populated", "scopes": []}),
            client_secret: Some(secrecy::SecretString::from("populated-secret")),
            role_mapping: RoleMapping {
                claim: "groups".into(),
                values: Default::default(),
                default_role: Some(karen_domain::RoleName::parse("member").unwrap()),
            },
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        tx.sso()
            .put_connection(&connection)
            .await
            .expect("connection");
        tx.sso()
            .insert_state(&SsoLoginState {
                id: karen_domain::SsoStateId::generate(),
                tenant_id: id,
                connection_id: connection.id,
                state_hash: karen_domain::credentials::SecretHash([1; 32]),
                nonce_hash: karen_domain::credentials::SecretHash([2; 32]),
                pkce_verifier: secrecy::SecretString::from("populated-verifier"),
                redirect_uri: "https://karen.example.com/v1/auth/sso/oidc/callback".into(),
                expires_at: now + time::Duration::minutes(10),
                used_at: None,
                created_at: now,
            })
            .await
            .expect("login state");
        tx.sso()
            .insert_identity(&SsoIdentity {
                tenant_id: id,
                connection_id: connection.id,
                subject: format!("populated-{user}"),
                user_id: karen_domain::UserId::from_uuid(user),
                created_at: now,
                last_login_at: now,
            })
            .await
            .expect("identity");
        // A consumed SAML assertion (the replay cache).
        tx.sso()
            .consume_assertion("_populated", now + time::Duration::minutes(10), now)
            .await
            .expect("consumed assertion");
        tx.commit().await.expect("commit");
    }
}
