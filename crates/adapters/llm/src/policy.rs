//! The SSRF guard for every outbound request to a model provider.
//!
//! A provider URL is configuration a tenant administrator may influence, so
//! it must not become a way to reach the cloud metadata service, the
//! database next door or Karen itself. Two checks enforce that:
//!
//! - [`Endpoint::parse`] checks the base URL when a provider is built:
//!   scheme, credentials, IP-literal hosts (reqwest never resolves those, so
//!   nothing else would see them) and `localhost`;
//! - the client from [`http_client`] resolves host names through the policy
//!   at connection time, so a name that later re-resolves to a private
//!   address (DNS rebinding) is refused then, not only when configured.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use karen_domain::ports::LlmError;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::Timeouts;

/// Which non-public destinations providers may reach. Everything on the
/// public internet is allowed; loopback, private, link-local and other
/// special-purpose addresses are refused unless an entry allows them.
///
/// Entries are `host`, `host:port` (the host as written in the provider URL,
/// e.g. `ollama.internal:11434` or `[::1]:8080`), or an IP address or CIDR
/// range (`10.0.0.0/8`, `127.0.0.1`) that allows those addresses whatever
/// name leads to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct OutboundPolicy {
    /// The allowed non-public destinations (see the type's documentation).
    pub allowlist: Vec<String>,
}

impl OutboundPolicy {
    /// A policy allowing the given entries beyond the public internet.
    pub fn new<I, S>(allowlist: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            allowlist: allowlist.into_iter().map(Into::into).collect(),
        }
    }

    /// Checks that every allowlist entry is well formed.
    pub fn validate(&self) -> Result<(), LlmError> {
        Rules::compile(self).map(drop)
    }

    /// Whether a connection to `ip` (reached through the name `host`, if any)
    /// is allowed, ignoring ports.
    pub fn allows_address(&self, host: Option<&str>, ip: IpAddr) -> Result<bool, LlmError> {
        let rules = Rules::compile(self)?;
        Ok(rules.allows_resolved(host.map(normalize_domain).as_deref(), ip))
    }
}

/// What kind of address an IP is, as far as outbound requests are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable: allowed without an allowlist entry.
    Public,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`).
    Private,
    /// `169.254/16`, `fe80::/10` (where cloud metadata services live).
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// Carrier-grade NAT, `100.64/10`.
    SharedAddressSpace,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// Any other special-purpose range (benchmarking, protocol assignments,
    /// future use, deprecated transition ranges, non-global IPv6).
    Reserved,
}

impl AddressClass {
    /// Whether the address is reachable on the public internet.
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    /// A phrase for error messages (`"a loopback address"`).
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private (RFC 1918) address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::UniqueLocal => "a unique-local address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::Reserved => "a reserved special-purpose address",
        }
    }
}

/// Classifies an address; IPv4 embedded in IPv6 (mapped, NAT64, 6to4) is
/// classified as the IPv4 address it carries, since that is where packets go.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, b, _) if (16..=31).contains(&b) => AddressClass::Private,
        (169, 254, _) => AddressClass::LinkLocal,
        (100, b, _) if (64..=127).contains(&b) => AddressClass::SharedAddressSpace,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        // IETF protocol assignments, 6to4 relay anycast, benchmarking.
        (192, 0, 0) | (192, 88, 99) => AddressClass::Reserved,
        (198, 18 | 19, _) => AddressClass::Reserved,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (224..=239, _, _) => AddressClass::Multicast,
        (240..=255, _, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let s = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    match s[0] {
        // IPv4-compatible (deprecated, ::/96) and everything else in ::/8.
        0x0000 => AddressClass::Reserved,
        // NAT64 well-known prefix: the packet goes to the embedded IPv4 address.
        0x0064 if s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] => classify_v4(embedded_v4(s[6], s[7])),
        0x2001 if s[1] == 0x0db8 => AddressClass::Documentation,
        // 2001::/23: Teredo, benchmarking, ORCHID and other protocol assignments.
        0x2001 if s[1] < 0x0200 => AddressClass::Reserved,
        // 6to4: the embedded IPv4 address is the real destination.
        0x2002 => classify_v4(embedded_v4(s[1], s[2])),
        0x3fff if s[1] & 0xf000 == 0 => AddressClass::Documentation,
        // Global unicast is 2000::/3; the rest of it is handled above.
        first if first & 0xe000 == 0x2000 => AddressClass::Public,
        first if first & 0xfe00 == 0xfc00 => AddressClass::UniqueLocal,
        first if first & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        first if first & 0xff00 == 0xff00 => AddressClass::Multicast,
        // Site-local (deprecated), discard-only, local-use NAT64 and unassigned space.
        _ => AddressClass::Reserved,
    }
}

/// A provider base URL that passed the [`OutboundPolicy`]: the only way to
/// hand a URL to a provider client.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
}

impl Endpoint {
    /// Parses `raw` and checks it against `policy`; the error says what is
    /// wrong with the URL and how to allow it if that was intended.
    pub fn parse(raw: &str, policy: &OutboundPolicy) -> Result<Self, LlmError> {
        let rules = Rules::compile(policy)?;
        let mut url = Url::parse(raw.trim()).map_err(|error| {
            LlmError::Refused(format!("the provider URL is not a valid URL: {error}"))
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(LlmError::Refused(format!(
                "the provider URL uses the '{}' scheme; only http and https are allowed",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Not echoing the URL: it holds a credential.
            return Err(LlmError::Refused(
                "the provider URL must not contain credentials; configure the API key instead"
                    .into(),
            ));
        }
        url.set_fragment(None);
        let port = url.port_or_known_default().unwrap_or(80);
        let host = match url.host() {
            Some(Host::Domain(domain)) => Destination::Domain(normalize_domain(domain)),
            Some(Host::Ipv4(ip)) => Destination::Ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Destination::Ip(IpAddr::V6(ip)),
            None => {
                return Err(LlmError::Refused(
                    "the provider URL has no host name".into(),
                ));
            }
        };
        rules.check_destination(&host, port).map_err(|reason| {
            LlmError::Refused(format!(
                "the provider URL {} is not allowed: {reason}; add it to the outbound \
                 allowlist if this is intended",
                origin(&url)
            ))
        })?;
        Ok(Self { url })
    }

    /// The base URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The base URL with `path` appended to its path (`/v1` + `chat/completions`).
    pub(crate) fn join(&self, path: &str) -> Url {
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{}", path.trim_start_matches('/')));
        url
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Endpoint").field(&self.url.as_str()).finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// Builds the HTTP client every provider uses: host names resolve through the
/// policy, redirects are not followed (a redirect could point anywhere, and
/// would carry the request body), and proxies from the environment are
/// ignored (a proxy resolves names itself, out of the guard's sight).
pub fn http_client(
    policy: &OutboundPolicy,
    timeouts: &Timeouts,
) -> Result<reqwest::Client, LlmError> {
    let rules = Arc::new(Rules::compile(policy)?);
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver { rules })
        .user_agent(concat!("karen/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| LlmError::Refused(format!("cannot build the HTTP client: {error}")))
}

/// The error a connection attempt fails with when every resolved address is
/// outside the policy; found again in reqwest's error chain to report
/// [`LlmError::Refused`] rather than a connection failure.
#[derive(Debug)]
pub(crate) struct PolicyViolation(pub(crate) String);

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyViolation {}

/// Resolves names with the system resolver, then keeps only the addresses the
/// policy allows. This runs for every new connection, which is what defeats
/// DNS rebinding.
#[derive(Debug)]
struct GuardedResolver {
    rules: Arc<Rules>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = Arc::clone(&self.rules);
        let host = normalize_domain(name.as_str());
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| rules.allows_resolved(Some(&host), addr.ip()));
            if allowed.is_empty() {
                let refused: BTreeSet<String> = refused
                    .iter()
                    .map(|addr| format!("{} is {}", addr.ip(), classify(addr.ip()).describe()))
                    .collect();
                let detail = if refused.is_empty() {
                    "it resolves to no address".to_owned()
                } else {
                    refused.into_iter().collect::<Vec<_>>().join(", ")
                };
                let message = format!(
                    "the outbound policy refuses '{host}': {detail}; add it to the outbound \
                     allowlist if this is intended"
                );
                return Err(Box::new(PolicyViolation(message)) as _);
            }
            if !refused.is_empty() {
                let dropped = refused.len();
                tracing::debug!(host = %host, dropped, "dropped non-public addresses");
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A destination as written in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Domain(String),
    Ip(IpAddr),
}

/// A `host` or `host:port` allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    host: Destination,
    port: Option<u16>,
}

/// The parsed allowlist.
#[derive(Debug, Clone, Default)]
struct Rules {
    networks: Vec<IpNet>,
    hosts: Vec<HostRule>,
}

impl Rules {
    fn compile(policy: &OutboundPolicy) -> Result<Self, LlmError> {
        let mut rules = Rules::default();
        for entry in &policy.allowlist {
            rules.add(entry).map_err(|reason| {
                LlmError::Refused(format!(
                    "outbound allowlist entry '{entry}' is invalid: {reason}"
                ))
            })?;
        }
        Ok(rules)
    }

    fn add(&mut self, raw: &str) -> Result<(), &'static str> {
        let entry = raw.trim();
        if entry.is_empty() {
            return Err("it is empty");
        }
        if let Ok(network) = entry.parse::<IpNet>() {
            self.networks.push(network.trunc());
            return Ok(());
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            self.networks.push(IpNet::from(ip));
            return Ok(());
        }
        if let Ok(socket) = entry.parse::<SocketAddr>() {
            let host = Destination::Ip(socket.ip());
            self.hosts.push(HostRule {
                host,
                port: Some(socket.port()),
            });
            return Ok(());
        }
        if entry.contains('/') || entry.contains('@') {
            return Err("entries are host, host:port, or an IP address or CIDR range, not URLs");
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| "the port is not a number")?;
                (host, Some(port))
            }
            _ => (entry, None),
        };
        let host = match Host::parse(host).map_err(|_| "the host is not a valid host name")? {
            Host::Domain(domain) => Destination::Domain(normalize_domain(&domain)),
            Host::Ipv4(ip) => Destination::Ip(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Destination::Ip(IpAddr::V6(ip)),
        };
        match (host, port) {
            (Destination::Ip(ip), None) => self.networks.push(IpNet::from(ip)),
            (host, port) => self.hosts.push(HostRule { host, port }),
        }
        Ok(())
    }

    /// Whether an address range entry covers `ip` (also in its IPv4 form when
    /// it is IPv4-mapped IPv6).
    fn networks_contain(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.networks
            .iter()
            .any(|network| network.contains(&ip) || network.contains(&canonical))
    }

    /// Whether a connection to `ip`, resolved from `host`, is allowed. Ports
    /// are not visible to a resolver: [`Endpoint::parse`] has already refused
    /// a URL whose host is allowlisted only on another port.
    fn allows_resolved(&self, host: Option<&str>, ip: IpAddr) -> bool {
        classify(ip).is_public()
            || self.networks_contain(ip)
            || host.is_some_and(|host| {
                self.hosts
                    .iter()
                    .any(|rule| matches!(&rule.host, Destination::Domain(d) if d == host))
            })
    }

    fn check_destination(&self, destination: &Destination, port: u16) -> Result<(), String> {
        let named: Vec<&HostRule> = self
            .hosts
            .iter()
            .filter(|rule| &rule.host == destination)
            .collect();
        if named.iter().any(|rule| rule.port.is_none_or(|p| p == port)) {
            return Ok(());
        }
        match destination {
            Destination::Ip(ip) => {
                let class = classify(*ip);
                if class.is_public() || self.networks_contain(*ip) {
                    Ok(())
                } else {
                    Err(format!("{ip} is {}", class.describe()))
                }
            }
            Destination::Domain(domain) => {
                if !named.is_empty() {
                    // Otherwise the resolver, which cannot see ports, would let
                    // this name reach private addresses on any port.
                    let ports: Vec<String> = named
                        .iter()
                        .filter_map(|rule| rule.port)
                        .map(|p| p.to_string())
                        .collect();
                    return Err(format!(
                        "{domain} is allowlisted only on port {}, not {port}",
                        ports.join(", ")
                    ));
                }
                if is_localhost(domain) {
                    // RFC 6761: these names always mean this machine.
                    let loopback = [
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ];
                    if loopback.iter().any(|ip| self.networks_contain(*ip)) {
                        return Ok(());
                    }
                    return Err(format!("{domain} is a loopback address"));
                }
                // Other names are checked against the policy when connecting.
                Ok(())
            }
        }
    }
}

fn is_localhost(domain: &str) -> bool {
    domain == "localhost" || domain.ends_with(".localhost")
}

/// Lowercase, without the trailing dot of a fully-qualified name.
fn normalize_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// `scheme://host:port` of a URL, for messages (never the path or query).
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
