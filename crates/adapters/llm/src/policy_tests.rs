use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn refused(url: &str, policy: &OutboundPolicy) -> String {
    match Endpoint::parse(url, policy) {
        Err(LlmError::Refused(reason)) => reason,
        other => panic!("{url} should be refused, got {other:?}"),
    }
}

#[test]
fn classifies_ipv4_special_ranges() {
    let cases = [
        ("0.0.0.0", AddressClass::Unspecified),
        ("0.1.2.3", AddressClass::Unspecified),
        ("127.0.0.1", AddressClass::Loopback),
        ("127.255.255.254", AddressClass::Loopback),
        ("10.0.0.1", AddressClass::Private),
        ("172.16.0.1", AddressClass::Private),
        ("172.31.255.255", AddressClass::Private),
        ("192.168.1.1", AddressClass::Private),
        ("169.254.169.254", AddressClass::LinkLocal),
        ("100.64.0.1", AddressClass::SharedAddressSpace),
        ("100.127.255.255", AddressClass::SharedAddressSpace),
        ("255.255.255.255", AddressClass::Broadcast),
        ("224.0.0.1", AddressClass::Multicast),
        ("239.255.255.250", AddressClass::Multicast),
        ("192.0.2.10", AddressClass::Documentation),
        ("198.51.100.7", AddressClass::Documentation),
        ("203.0.113.9", AddressClass::Documentation),
        ("198.18.0.1", AddressClass::Reserved),
        ("192.0.0.8", AddressClass::Reserved),
        ("240.0.0.1", AddressClass::Reserved),
    ];
    for (address, class) in cases {
        assert_eq!(classify(ip(address)), class, "{address}");
    }
}

#[test]
fn classifies_public_ipv4_next_to_special_ranges() {
    for address in [
        "8.8.8.8",
        "1.1.1.1",
        "172.15.255.255",
        "172.32.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "169.253.0.1",
        "192.169.0.1",
        "11.0.0.1",
        "223.255.255.255",
    ] {
        assert_eq!(classify(ip(address)), AddressClass::Public, "{address}");
    }
}

#[test]
fn classifies_ipv6_special_ranges() {
    let cases = [
        ("::", AddressClass::Unspecified),
        ("::1", AddressClass::Loopback),
        ("fe80::1", AddressClass::LinkLocal),
        ("febf::1", AddressClass::LinkLocal),
        ("fc00::1", AddressClass::UniqueLocal),
        ("fd12:3456::1", AddressClass::UniqueLocal),
        ("ff02::1", AddressClass::Multicast),
        ("2001:db8::1", AddressClass::Documentation),
        ("3fff::1", AddressClass::Documentation),
        ("2001::1", AddressClass::Reserved),
        ("2001:2::1", AddressClass::Reserved),
        ("fec0::1", AddressClass::Reserved),
        ("100::1", AddressClass::Reserved),
        ("::7f00:1", AddressClass::Reserved),
    ];
    for (address, class) in cases {
        assert_eq!(classify(ip(address)), class, "{address}");
    }
    for address in [
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "2001:4860::8888",
    ] {
        assert_eq!(classify(ip(address)), AddressClass::Public, "{address}");
    }
}

#[test]
fn classifies_ipv4_carried_in_ipv6_as_the_ipv4_address() {
    let cases = [
        ("::ffff:127.0.0.1", AddressClass::Loopback),
        ("::ffff:169.254.169.254", AddressClass::LinkLocal),
        ("::ffff:10.1.2.3", AddressClass::Private),
        ("::ffff:8.8.8.8", AddressClass::Public),
        ("64:ff9b::7f00:1", AddressClass::Loopback),
        ("64:ff9b::808:808", AddressClass::Public),
        ("2002:a00:1::", AddressClass::Private),
        ("2002:808:808::", AddressClass::Public),
    ];
    for (address, class) in cases {
        assert_eq!(classify(ip(address)), class, "{address}");
    }
}

#[test]
fn public_urls_pass_and_keep_their_path() {
    let policy = OutboundPolicy::default();
    let endpoint = Endpoint::parse("https://api.openai.com/v1/", &policy).unwrap();
    assert_eq!(
        endpoint.join("chat/completions").as_str(),
        "https://api.openai.com/v1/chat/completions"
    );
    let endpoint = Endpoint::parse("http://8.8.8.8:8080/v1", &policy).unwrap();
    assert_eq!(
        endpoint.join("/models").as_str(),
        "http://8.8.8.8:8080/v1/models"
    );
}

#[test]
fn refuses_non_public_ip_literals() {
    let policy = OutboundPolicy::default();
    for url in [
        "http://127.0.0.1:11434/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://10.0.0.5/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f.1/",
    ] {
        let reason = refused(url, &policy);
        assert!(reason.contains("allowlist"), "{url}: {reason}");
    }
    let reason = refused("http://169.254.169.254/", &policy);
    assert!(
        reason.contains("169.254.169.254 is a link-local address"),
        "{reason}"
    );
}

#[test]
fn refuses_localhost_names_up_front() {
    let policy = OutboundPolicy::default();
    for url in [
        "http://localhost:8080/v1",
        "http://LOCALHOST./",
        "http://api.localhost/",
    ] {
        let reason = refused(url, &policy);
        assert!(reason.contains("loopback"), "{url}: {reason}");
    }
}

#[test]
fn refuses_other_schemes_and_credentials_without_echoing_them() {
    let policy = OutboundPolicy::default();
    assert!(refused("file:///etc/passwd", &policy).contains("'file' scheme"));
    assert!(refused("gopher://example.com/", &policy).contains("only http and https"));
    assert!(refused("not a url", &policy).contains("not a valid URL"));
    let reason = refused("https://user:hunter2@api.example.com/v1", &policy);
    assert!(!reason.contains("hunter2"), "{reason}");
    assert!(reason.contains("credentials"));
}

#[test]
fn allowlist_by_host_and_port() {
    let policy = OutboundPolicy::new(["127.0.0.1:11434", "[::1]:8080", "ollama.internal:11434"]);
    Endpoint::parse("http://127.0.0.1:11434/v1", &policy).unwrap();
    Endpoint::parse("http://[::1]:8080/v1", &policy).unwrap();
    Endpoint::parse("http://ollama.internal:11434/v1", &policy).unwrap();
    assert!(refused("http://127.0.0.1:22/", &policy).contains("loopback"));
    assert!(refused("http://[::1]:9090/", &policy).contains("loopback"));
    let reason = refused("http://ollama.internal:6379/", &policy);
    assert!(reason.contains("only on port 11434"), "{reason}");
}

#[test]
fn allowlist_by_host_without_port() {
    let policy = OutboundPolicy::new(["localhost", "Models.Internal."]);
    Endpoint::parse("http://localhost:1234/v1", &policy).unwrap();
    Endpoint::parse("http://models.internal:9000/v1", &policy).unwrap();
    assert!(refused("http://api.localhost/", &policy).contains("loopback"));
}

#[test]
fn allowlist_by_cidr_and_address() {
    let policy = OutboundPolicy::new(["10.0.0.0/8", "127.0.0.1", "fd00::/8"]);
    Endpoint::parse("http://10.20.30.40:8000/v1", &policy).unwrap();
    Endpoint::parse("http://127.0.0.1:9999/v1", &policy).unwrap();
    Endpoint::parse("http://[fd12::1]/v1", &policy).unwrap();
    // The IPv4-mapped form of an allowed address is the same destination.
    Endpoint::parse("http://[::ffff:10.1.1.1]/v1", &policy).unwrap();
    // An allowed loopback address lets `localhost` through too.
    Endpoint::parse("http://localhost:9999/v1", &policy).unwrap();
    assert!(refused("http://127.0.0.2/", &policy).contains("loopback"));
    assert!(refused("http://192.168.0.1/", &policy).contains("private"));
    assert!(refused("http://[fe80::1]/", &policy).contains("link-local"));
}

#[test]
fn resolved_addresses_are_filtered_by_network_and_by_name() {
    let policy = OutboundPolicy::new(["10.0.0.0/8", "gpu-box:8000"]);
    assert!(
        policy
            .allows_address(Some("example.com"), ip("93.184.216.34"))
            .unwrap()
    );
    assert!(
        policy
            .allows_address(Some("anything"), ip("10.9.8.7"))
            .unwrap()
    );
    assert!(
        policy
            .allows_address(Some("anything"), ip("::ffff:10.9.8.7"))
            .unwrap()
    );
    assert!(
        policy
            .allows_address(Some("GPU-BOX."), ip("192.168.1.20"))
            .unwrap()
    );
    assert!(
        !policy
            .allows_address(Some("rebound.example"), ip("127.0.0.1"))
            .unwrap()
    );
    assert!(
        !policy
            .allows_address(Some("rebound.example"), ip("::ffff:169.254.169.254"))
            .unwrap()
    );
    assert!(!policy.allows_address(None, ip("192.168.1.20")).unwrap());
}

#[test]
fn invalid_allowlist_entries_are_reported() {
    for entry in [
        "",
        "http://10.0.0.1/",
        "host:port",
        "10.0.0.0/33",
        "bad host:80",
    ] {
        let policy = OutboundPolicy::new([entry]);
        match policy.validate() {
            Err(LlmError::Refused(reason)) => {
                assert!(reason.contains("allowlist entry"), "{reason}")
            }
            other => panic!("'{entry}' should be invalid, got {other:?}"),
        }
    }
    OutboundPolicy::new(["10.0.0.0/8", "::1", "[::1]:80", "a.b:1", "host"])
        .validate()
        .unwrap();
}

#[tokio::test]
async fn resolver_refuses_names_that_resolve_to_loopback() {
    let resolver = GuardedResolver {
        rules: Arc::new(Rules::compile(&OutboundPolicy::default()).unwrap()),
    };
    let error = match resolver.resolve(Name::from_str("localhost").unwrap()).await {
        Err(error) => error,
        Ok(addresses) => panic!("localhost resolved to {:?}", addresses.collect::<Vec<_>>()),
    };
    let violation = error
        .downcast_ref::<PolicyViolation>()
        .expect("a policy violation");
    assert!(violation.0.contains("loopback"), "{violation}");
}

#[tokio::test]
async fn resolver_keeps_allowlisted_addresses() {
    let policy = OutboundPolicy::new(["127.0.0.0/8"]);
    let resolver = GuardedResolver {
        rules: Arc::new(Rules::compile(&policy).unwrap()),
    };
    let addresses: Vec<SocketAddr> = resolver
        .resolve(Name::from_str("localhost").unwrap())
        .await
        .unwrap()
        .collect();
    assert!(
        addresses
            .iter()
            .all(|addr| addr.ip().to_canonical().is_loopback())
    );
    assert!(
        addresses
            .iter()
            .any(|addr| addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST))
    );
    // ::1 is not in 127.0.0.0/8, so it is dropped rather than refused outright.
    assert!(addresses.iter().all(|addr| addr.is_ipv4()));
}
