//! Nothing travels in clear: MQTT over TLS between the gateway and Mosquitto (CA checked,
//! client certificates required), the embedded broker's TLS listener and its logins, and
//! HTTPS for the officer API with a certificate renewed under a running gateway. Certificates
//! come from `firegrid certs`; every refusal is checked where it shows (the client's error, the
//! gateway's metrics), and a legitimate detector's alarm still pages over the encrypted links.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firegrid_gateway::tls::ClientTls;
use firegrid_protocol::Encoding;
use firegrid_tests::firegrid::alarm_loop_section;
use firegrid_tests::mosquitto::MosquittoTls;
use firegrid_tests::officers::write_street_desk;
use firegrid_tests::{Firegrid, Mosquitto, WebhookReceiver, free_port};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};

use crate::trust::{
    alarm, config, devices, firegrid, heartbeat_body, provision, publish, rejected, uplink, wait_metric,
};

/// `firegrid certs` into `dir` with client certificates for `clients`.
fn certs(dir: &Path, hosts: &[&str], clients: &[&str]) -> String {
    let mut args = vec!["certs", "--out-dir", dir.to_str().unwrap()];
    for h in hosts {
        args.extend(["--host", h]);
    }
    for c in clients {
        args.extend(["--client", c]);
    }
    firegrid(&args)
}

/// MQTT options for `host:port` over TLS, trusting `ca`, with a client certificate when given.
fn tls_options(id: &str, port: u16, ca: &Path, client: Option<(PathBuf, PathBuf)>) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    let (client_cert, client_key) = client.unzip();
    let config = ClientTls { ca: ca.to_owned(), client_cert, client_key }.client_config().unwrap();
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    opts
}

/// How a connection attempt ended: `Ok` with a running client on an accepting CONNACK, else the
/// refusal as the client saw it.
pub(crate) async fn connect(
    mut opts: MqttOptions,
    credentials: Option<(&str, &str)>,
) -> Result<AsyncClient, String> {
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("{error:?}")),
            Err(_) => return Err("no CONNACK".into()),
        }
    }
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    Ok(client)
}

async fn until_paged(hook: &WebhookReceiver, gateway: &Firegrid) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.received().is_empty() {
        assert!(Instant::now() < deadline, "the real alarm paged nobody\n{}", gateway.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Mosquitto with the generated accounts and ACL, listening for MQTT over TLS with client
/// certificates required; the gateway reaches it over TLS only, checking its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_and_detectors_reach_mosquitto_over_tls_only_with_the_right_certificates() {
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (registry, keys, _, issued) = provision(dir.path());
    let certs_dir = dir.path().join("certs");
    let said = certs(&certs_dir, &[], &["gateway", "sd-a1"]);
    assert!(said.contains("Made a new CA"), "{said}");
    let broker_dir = dir.path().join("broker");
    firegrid(&[
        "broker",
        "mosquitto",
        "--registry",
        registry.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--out-dir",
        broker_dir.to_str().unwrap(),
    ]);
    let gateway_password =
        std::fs::read_to_string(broker_dir.join("gateway.password")).unwrap().trim().to_owned();
    let ca = certs_dir.join("ca.pem");
    let broker = Mosquitto::start_tls(
        &broker_dir.join("passwd"),
        &broker_dir.join("acl"),
        MosquittoTls {
            ca: ca.clone(),
            cert: certs_dir.join("server.pem"),
            key: certs_dir.join("server.key"),
            require_certificate: true,
        },
    )
    .unwrap();
    let tls_port = broker.tls_port().unwrap();
    let officers = dir.path().join("officers.toml");
    write_street_desk(&officers, "Fuhai");
    let base = config(tls_port, hook.port(), registry.clone(), keys.clone(), officers);
    let tls_section = format!(
        "[mqtt.tls]\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n[registry]",
        ca.display(),
        certs_dir.join("client-gateway.pem").display(),
        certs_dir.join("client-gateway.key").display()
    );
    let gateway = Firegrid::start(move |d: &Path, port: u16| {
        base(d, port)
            .replace(
                "client_id = \"gw-trust\"",
                &format!(
                    "client_id = \"gw-trust\"\nusername = \"firegrid-gateway\"\npassword = \"{gateway_password}\""
                ),
            )
            .replacen("[registry]", &tls_section, 1)
    })
    .unwrap();

    let a1 = issued["sd-a1"].1.clone();
    let p1 = a1.mqtt_password().to_string();
    let client_cert = Some((certs_dir.join("client-sd-a1.pem"), certs_dir.join("client-sd-a1.key")));
    // Plain text to the TLS port: no MQTT conversation at all.
    let plain = connect(MqttOptions::new("sd-a1", "127.0.0.1", tls_port), Some(("sd-a1", &p1))).await;
    assert!(plain.is_err(), "a plain-text client was answered on the TLS port");
    // A broker certificate from another CA (an impostor's) is refused by the client.
    let other = dir.path().join("other-ca");
    certs(&other, &[], &[]);
    let impostor =
        connect(tls_options("sd-a1", tls_port, &other.join("ca.pem"), None), Some(("sd-a1", &p1))).await;
    let Err(impostor) = impostor else { panic!("a certificate of another CA was trusted") };
    assert!(impostor.contains("BadSignature") || impostor.contains("UnknownIssuer"), "{impostor}");
    // Without a client certificate the broker refuses the handshake.
    assert!(
        connect(tls_options("sd-a1", tls_port, &ca, None), Some(("sd-a1", &p1))).await.is_err(),
        "the broker admitted a client without a certificate"
    );
    // With its certificate and its account, the detector is heard and its alarm pages.
    let detector =
        connect(tls_options("sd-a1", tls_port, &ca, client_cert), Some(("sd-a1", &p1))).await.unwrap();
    publish(&detector, uplink("sd-a1", 1, heartbeat_body(), Some(&a1), Encoding::Compact)).await;
    wait_metric(&gateway, r#"firegrid_messages_accepted_total{kind="heartbeat"}"#, 1.0).await;
    publish(&detector, uplink("sd-a1", 2, alarm(), Some(&a1), Encoding::Compact)).await;
    until_paged(&hook, &gateway).await;
}

/// The embedded broker with a key store: every login is judged (the gateway's own, each
/// device's, a platform's) and refusals are counted by reason; MQTT over TLS on its second
/// listener; the officer API over HTTPS on a public address, with its certificate renewed
/// under the running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_admits_only_its_accounts_and_the_officer_api_speaks_only_https() {
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (registry, keys, _, issued) = provision(dir.path());
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &[], &[]);
    let ca = certs_dir.join("ca.pem");
    let officers = dir.path().join("officers.toml");
    let desk_token = write_street_desk(&officers, "Fuhai");
    let (plain_port, tls_port) = (free_port().unwrap(), free_port().unwrap());
    let config = {
        let (certs_dir, registry, keys, hook) =
            (certs_dir.clone(), registry.clone(), keys.clone(), hook.port());
        move |d: &Path, https: u16, ops: u16| {
            format!(
                r#"
data_dir = "{data}"
http_listen = "0.0.0.0:{https}"
ops_listen = "127.0.0.1:{ops}"
[http_tls]
cert = "{certs}/server.pem"
key = "{certs}/server.key"
[embedded_broker]
listen = "127.0.0.1:{plain_port}"
tls_listen = "127.0.0.1:{tls_port}"
tls = {{ cert = "{certs}/server.pem", key = "{certs}/server.key" }}
{tail}"#,
                data = d.join("data").display(),
                certs = certs_dir.display(),
                tail = alarm_loop_section(&registry, &keys, &officers, hook),
            )
        }
    };
    let gateway = Firegrid::start_with_ops(config).unwrap();

    let (a1, a2, a3) = (issued["sd-a1"].1.clone(), issued["sd-a2"].1.clone(), issued["sd-a3"].1.clone());
    let (p1, p2, p3) =
        (a1.mqtt_password().to_string(), a2.mqtt_password().to_string(), a3.mqtt_password().to_string());
    let plain = |id: &str| MqttOptions::new(id, "127.0.0.1", plain_port);
    let refused = |reason: &str| format!(r#"firegrid_broker_logins_refused_total{{reason="{reason}"}}"#);

    // At the door: anonymous (refused by rumqttd before any account is looked at), a wrong
    // password, an unknown user, a device's password for the gateway's account.
    assert!(connect(plain("anon"), None).await.is_err(), "anonymous login accepted");
    assert!(connect(plain("guess"), Some(("sd-a1", "0000"))).await.is_err(), "wrong password accepted");
    assert!(connect(plain("who"), Some(("sd-zz", &p1))).await.is_err(), "unknown user accepted");
    assert!(
        connect(plain("as-gw"), Some(("firegrid-gateway", &p1))).await.is_err(),
        "gateway account opened"
    );
    wait_metric(&gateway, &refused("wrong_password"), 2.0).await;
    wait_metric(&gateway, &refused("unknown_user"), 1.0).await;

    // Plain text to the TLS listener: no MQTT conversation, and the refusal is counted.
    assert!(connect(MqttOptions::new("sd-a1", "127.0.0.1", tls_port), Some(("sd-a1", &p1))).await.is_err());
    wait_metric(&gateway, &refused("tls_handshake"), 1.0).await;

    // sd-a2's own account publishing as sd-a1: rumqttd has no topic ACLs, so the tag check is
    // what refuses it.
    let a2_client = connect(tls_options("sd-a2", tls_port, &ca, None), Some(("sd-a2", &p2))).await.unwrap();
    publish(&a2_client, uplink("sd-a1", 4_000_000_000, heartbeat_body(), None, Encoding::Json)).await;
    publish(&a2_client, uplink("sd-a1", 4_000_000_001, heartbeat_body(), Some(&a2), Encoding::Json)).await;
    wait_metric(&gateway, &rejected("unsigned"), 1.0).await;
    wait_metric(&gateway, &rejected("bad_signature"), 1.0).await;

    // The real detector over TLS with its own account: its alarm pages.
    let detector = connect(tls_options("sd-a1", tls_port, &ca, None), Some(("sd-a1", &p1))).await.unwrap();
    publish(&detector, uplink("sd-a1", 1, alarm(), Some(&a1), Encoding::Compact)).await;
    until_paged(&hook, &gateway).await;

    // A revoked device cannot log in any more once the gateway has reloaded its keys.
    assert!(connect(plain("sd-a3"), Some(("sd-a3", &p3))).await.is_ok());
    devices(&["revoke", "--keys", keys.to_str().unwrap(), "sd-a3"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while connect(plain("sd-a3"), Some(("sd-a3", &p3))).await.is_ok() {
        assert!(Instant::now() < deadline, "the revoked device still logs in");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_metric(&gateway, &refused("revoked"), 1.0).await;

    // HTTPS: the officer API answers over TLS with a certificate the CA vouches for; plain
    // HTTP on the same port gets no HTTP answer.
    let https = gateway.http_port();
    let client = |extra: Option<&str>| {
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(10));
        if let Some(host) = extra {
            b = b.resolve(host, ([127, 0, 0, 1], https).into());
        }
        b.build().unwrap()
    };
    let cases = client(None)
        .get(format!("https://localhost:{https}/api/v1/cases"))
        .bearer_auth(&desk_token)
        .send()
        .await
        .unwrap();
    assert_eq!(cases.status(), 200);
    let body = cases.text().await.unwrap();
    assert!(body.contains("sd-a1"), "the alarm's case is not listed: {body}");
    let clear = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let in_clear = clear.get(format!("http://127.0.0.1:{https}/healthz")).send().await;
    assert!(
        in_clear.is_err(),
        "plain HTTP was answered on the HTTPS port: {:?}",
        in_clear.map(|r| r.status())
    );

    // Renewal under the running gateway: a certificate for a new name is served within the
    // reload interval, without a restart.
    let name = "console.fuhai.example";
    let renewed =
        |c: reqwest::Client| async move { c.get(format!("https://{name}:{https}/healthz")).send().await };
    assert!(renewed(client(Some(name))).await.is_err(), "the first certificate does not carry {name}");
    certs(&certs_dir, &[name], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match renewed(client(Some(name))).await {
            Ok(reply) => {
                assert_eq!(reply.status(), 200);
                break;
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "the renewed certificate was not served: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    assert!(gateway.log_tail(200).contains("TLS certificate reloaded"), "{}", gateway.log_tail(40));
}

/// A TLS handshake with the listener on loopback `port`, asking for `name`, trusting `ca` and
/// presenting `client`'s certificate: the served certificate (DER) or the client's error.
async fn served_certificate(
    port: u16,
    ca: &Path,
    name: &str,
    client: (PathBuf, PathBuf),
) -> Result<Vec<u8>, String> {
    let (client_cert, client_key) = (Some(client.0), Some(client.1));
    let config = ClientTls { ca: ca.to_owned(), client_cert, client_key }.client_config().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("the TLS listener is up");
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("{e:?}"))?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// The embedded broker's TLS listener with `client_ca`: a device without a certificate, or
/// with one from another CA, is refused at the handshake (counted), one whose certificate the
/// CA signed logs in with its account and its alarm pages; a server certificate renewed under
/// the running gateway is served to the next connection without a restart, and the device is
/// still heard over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_brokers_tls_listener_requires_client_certificates_and_serves_a_renewed_one() {
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (registry, keys, _, issued) = provision(dir.path());
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &[], &["sd-a1"]);
    let ca = certs_dir.join("ca.pem");
    let officers = dir.path().join("officers.toml");
    write_street_desk(&officers, "Fuhai");
    let (plain_port, tls_port) = (free_port().unwrap(), free_port().unwrap());
    let config = {
        let (certs_dir, registry, keys, hook) =
            (certs_dir.clone(), registry.clone(), keys.clone(), hook.port());
        move |d: &Path, http: u16| {
            format!(
                r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http}"
[embedded_broker]
listen = "127.0.0.1:{plain_port}"
tls_listen = "127.0.0.1:{tls_port}"
tls = {{ cert = "{certs}/server.pem", key = "{certs}/server.key", client_ca = "{certs}/ca.pem" }}
{tail}"#,
                data = d.join("data").display(),
                certs = certs_dir.display(),
                tail = alarm_loop_section(&registry, &keys, &officers, hook),
            )
        }
    };
    let gateway = Firegrid::start(config).unwrap();
    let refused = |reason: &str| format!(r#"firegrid_broker_logins_refused_total{{reason="{reason}"}}"#);
    let a1 = issued["sd-a1"].1.clone();
    let p1 = a1.mqtt_password().to_string();
    let client_cert = || Some((certs_dir.join("client-sd-a1.pem"), certs_dir.join("client-sd-a1.key")));

    // No certificate, and a certificate another CA signed: refused during the handshake.
    assert!(
        connect(tls_options("sd-a1", tls_port, &ca, None), Some(("sd-a1", &p1))).await.is_err(),
        "the broker admitted a device without a certificate"
    );
    let other = dir.path().join("other-ca");
    certs(&other, &[], &["sd-a1"]);
    let foreign = Some((other.join("client-sd-a1.pem"), other.join("client-sd-a1.key")));
    assert!(
        connect(tls_options("sd-a1", tls_port, &ca, foreign), Some(("sd-a1", &p1))).await.is_err(),
        "the broker admitted a certificate of another CA"
    );
    wait_metric(&gateway, &refused("tls_handshake"), 2.0).await;
    // A certificate is not an account: the right certificate with a wrong password is refused
    // at login, behind the TLS front.
    assert!(
        connect(tls_options("sd-a1", tls_port, &ca, client_cert()), Some(("sd-a1", "0000"))).await.is_err(),
        "a wrong password was accepted over TLS"
    );
    wait_metric(&gateway, &refused("wrong_password"), 1.0).await;

    // The detector with its certificate and its account: heard, and its alarm pages.
    let detector =
        connect(tls_options("sd-a1", tls_port, &ca, client_cert()), Some(("sd-a1", &p1))).await.unwrap();
    publish(&detector, uplink("sd-a1", 1, heartbeat_body(), Some(&a1), Encoding::Compact)).await;
    wait_metric(&gateway, r#"firegrid_messages_accepted_total{kind="heartbeat"}"#, 1.0).await;

    // Renewal: a certificate for a new name is served to new connections within the reload
    // interval, without a restart.
    let name = "broker.fuhai.example";
    let first = served_certificate(tls_port, &ca, "localhost", client_cert().unwrap()).await.unwrap();
    let before = served_certificate(tls_port, &ca, name, client_cert().unwrap()).await.unwrap_err();
    assert!(before.contains("NotValidForName"), "the first certificate already names {name}: {before}");
    certs(&certs_dir, &[name], &["sd-a1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let renewed = loop {
        match served_certificate(tls_port, &ca, name, client_cert().unwrap()).await {
            Ok(renewed) => break renewed,
            Err(error) => {
                assert!(error.contains("NotValidForName"), "{error}");
                assert!(Instant::now() < deadline, "the renewed certificate was not served: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert_ne!(first, renewed);
    assert!(gateway.log_tail(200).contains("TLS certificate reloaded"), "{}", gateway.log_tail(40));
    // The detector connects again over the renewed certificate, and its alarm pages.
    drop(detector);
    let detector =
        connect(tls_options("sd-a1", tls_port, &ca, client_cert()), Some(("sd-a1", &p1))).await.unwrap();
    publish(&detector, uplink("sd-a1", 2, alarm(), Some(&a1), Encoding::Compact)).await;
    until_paged(&hook, &gateway).await;
}

/// The README's nginx example, run as written (listen address, certificate paths and upstream
/// port filled in): officers reach the API over HTTPS through it, the gateway on loopback
/// behind it with `http_tls_proxy = true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_nginx_example_carries_the_officer_api_over_https() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let name = "firegrid.example.org";
    certs(&certs_dir, &[name], &[]);
    let officers = dir.path().join("officers.toml");
    let desk_token = write_street_desk(&officers, "Fuhai");
    let gateway = {
        let (officers, broker) = (officers.clone(), broker.port());
        Firegrid::start(move |d: &Path, http: u16| {
            format!(
                "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\nhttp_tls_proxy = true\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"gw-nginx\"\n[alerting]\ndistrict = \"Xishan\"\nofficers = \"{}\"\n",
                d.join("data").display(),
                officers.display()
            )
        })
        .unwrap()
    };

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme.split("```nginx\n").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
    let mut server = block.to_owned();
    for (from, to) in [
        ("listen 443 ssl;".to_owned(), "listen 127.0.0.1:{port} ssl;".to_owned()),
        ("/etc/nginx/tls/firegrid.crt".to_owned(), certs_dir.join("server.pem").display().to_string()),
        ("/etc/nginx/tls/firegrid.key".to_owned(), certs_dir.join("server.key").display().to_string()),
        ("http://127.0.0.1:8080".to_owned(), format!("http://127.0.0.1:{}", gateway.http_port())),
    ] {
        assert!(server.contains(&from), "the README's nginx example no longer has {from:?}:\n{block}");
        server = server.replace(&from, &to);
    }
    let nginx = firegrid_tests::nginx::Nginx::start(&server).unwrap();

    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs_dir.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve(name, ([127, 0, 0, 1], nginx.port()).into())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("https://{name}:{}", nginx.port());
    let me = client.get(format!("{base}/api/v1/me")).bearer_auth(&desk_token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    assert!(me.text().await.unwrap().contains("street-desk"));
    let anonymous = client.get(format!("{base}/api/v1/me")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // The live stream passes unbuffered: its headers arrive at once.
    let events = client.get(format!("{base}/api/v1/events")).bearer_auth(&desk_token).send().await.unwrap();
    assert_eq!(events.status(), 200);
    let kind = events.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(kind.as_deref(), Some("text/event-stream"));
}
