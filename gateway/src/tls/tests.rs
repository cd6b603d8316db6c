use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::certs::{self, Request};
use super::*;

fn make(dir: &Path, clients: &[&str]) -> certs::Made {
    certs::make(&Request {
        dir: dir.to_owned(),
        hosts: vec!["gateway.village.example".into()],
        clients: clients.iter().map(|c| c.to_string()).collect(),
        days: 30,
    })
    .unwrap()
}

fn serve(dir: &Path, client_ca: bool) -> (Arc<ReloadingCert>, Arc<ServerConfig>) {
    let files = ServeTls {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: client_ca.then(|| dir.join("ca.pem")),
    };
    let cert = ReloadingCert::load(&files).unwrap();
    let config = server_config(cert.clone(), &[]).unwrap();
    (cert, config)
}

/// One handshake over an in-memory pipe and a byte echoed; the client's error if any.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let served = tokio::spawn(async move {
        let mut tls = acceptor.accept(b).await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let chain = tls.get_ref().1.peer_certificates().map(|c| c.len()).unwrap_or(0);
        Ok::<_, String>(chain)
    });
    // No session resumption: each handshake sees the certificate served now.
    let mut client = (*client).clone();
    client.resumption = rustls::client::Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let result = async {
        let mut tls = connector.connect(name, a).await.map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        Ok::<_, String>(served)
    }
    .await;
    drop(served);
    result
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_by_every_name_the_certificate_carries() {
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path(), &[]);
    assert!(made.new_ca);
    let (_, server) = serve(dir.path(), false);
    let client = ClientTls { ca: dir.path().join("ca.pem"), client_cert: None, client_key: None }
        .client_config()
        .unwrap();
    for name in ["localhost", "127.0.0.1", "gateway.village.example"] {
        handshake(server.clone(), client.clone(), name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The hostname check: a name the certificate does not carry is refused.
    let wrong = handshake(server.clone(), client.clone(), "other.example").await.unwrap_err();
    assert!(wrong.contains("not valid for name") || wrong.contains("NotValidForName"), "{wrong}");
}

#[tokio::test]
async fn a_client_with_another_ca_is_refused() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make(ours.path(), &[]);
    make(theirs.path(), &[]);
    let (_, server) = serve(ours.path(), false);
    let client = ClientTls { ca: theirs.path().join("ca.pem"), client_cert: None, client_key: None }
        .client_config()
        .unwrap();
    let refused = handshake(server, client, "localhost").await.unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), &["gateway"]);
    let (_, server) = serve(dir.path(), true);
    let ca = dir.path().join("ca.pem");
    let anonymous =
        ClientTls { ca: ca.clone(), client_cert: None, client_key: None }.client_config().unwrap();
    assert!(handshake(server.clone(), anonymous, "localhost").await.is_err());
    let with_cert = ClientTls {
        ca,
        client_cert: Some(dir.path().join("client-gateway.pem")),
        client_key: Some(dir.path().join("client-gateway.key")),
    }
    .client_config()
    .unwrap();
    handshake(server, with_cert, "localhost").await.unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), &[]);
    let (cert, server) = serve(dir.path(), false);
    let client = ClientTls { ca: dir.path().join("ca.pem"), client_cert: None, client_key: None }
        .client_config()
        .unwrap();
    let before = handshake(server.clone(), client.clone(), "localhost").await.unwrap();
    assert!(!cert.reload_if_changed(), "nothing changed yet");

    // Renew with the same CA (a second run reuses it). Modification times have a coarse
    // granularity on some filesystems; step them explicitly.
    std::thread::sleep(Duration::from_millis(20));
    let again = make(dir.path(), &[]);
    assert!(!again.new_ca, "the existing CA signs the renewal");
    let later = SystemTime::now() + Duration::from_secs(5);
    for f in ["server.pem", "server.key"] {
        fs::File::options().write(true).open(dir.path().join(f)).unwrap().set_modified(later).unwrap();
    }
    assert!(cert.reload_if_changed());
    let after = handshake(server.clone(), client.clone(), "localhost").await.unwrap();
    assert_ne!(before, after, "the renewed certificate is served");

    // A half-written renewal keeps the last good certificate.
    fs::write(dir.path().join("server.pem"), "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    let later = later + Duration::from_secs(5);
    fs::File::options().write(true).open(dir.path().join("server.pem")).unwrap().set_modified(later).unwrap();
    assert!(!cert.reload_if_changed());
    assert_eq!(handshake(server, client, "localhost").await.unwrap(), after);
}

#[test]
fn keys_are_private_and_errors_name_files_not_contents() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), &["gateway"]);
    for key in ["ca.key", "server.key", "client-gateway.key"] {
        let mode = fs::metadata(dir.path().join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // A key file handed where a certificate belongs: the error names the file and what was
    // missing, and shows none of the key.
    let error = load_certs("certificate", &dir.path().join("server.key")).unwrap_err().to_string();
    assert!(error.contains("server.key") && error.contains("no certificate"), "{error}");
    let key_text = fs::read_to_string(dir.path().join("server.key")).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    assert!(!error.contains(body));
    assert!(
        certs::make(&Request {
            dir: dir.path().into(),
            hosts: vec![],
            clients: vec!["../x".into()],
            days: 1
        })
        .is_err()
    );
}
