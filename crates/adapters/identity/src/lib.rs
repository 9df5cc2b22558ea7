//! Karen's identity providers, behind the ports of `karen-domain`: the
//! OpenID Connect relying party ([`oidc::OidcHttpClient`]).

pub mod oidc;
