//! Karen's identity providers, behind the ports of `karen-domain`: the
//! OpenID Connect relying party ([`oidc::OidcHttpClient`]) and the SAML 2.0
//! service-provider protocol core ([`saml`]).

pub mod oidc;
pub mod saml;
