//! The case store's link to PostgreSQL: TLS with the server's certificate checked and no
//! fallback to plain text (`[alerting.store] tls`), and a connection string naming a primary
//! and its standby (`target_session_attrs=read-write`) that the store follows through a
//! failover without being opened again.
//!
//! The servers are real PostgreSQL clusters with `ssl = on` and a `pg_hba.conf` that admits
//! TCP clients only over TLS (`hostssl`, `hostnossl ... reject`), their certificates made by
//! `firegrid certs`' code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firegrid_cases::store::{CaseFilter, CaseStore, PostgresOptions, StoreError};
use firegrid_gateway::tls::ClientTls;
use firegrid_tests::{Firegrid, Mosquitto, Postgres, PostgresTls, WebhookReceiver};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_rustls::rustls;

use crate::postgres_store::{alarm, commit_batch, count, count_where, make_synchronous, try_commit_batch};

/// The rustls configuration a gateway builds from `[alerting.store] tls = { ca = ... }`.
fn trusting(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    ClientTls { ca: ca.to_owned(), client_cert: None, client_key: None }.client_config().unwrap()
}

fn options(server: &Postgres, tls: Option<Arc<rustls::ClientConfig>>) -> PostgresOptions {
    PostgresOptions { password: Some(server.password().to_owned()), tls, ..PostgresOptions::default() }
}

/// The sessions of database `firegrid` that came over TCP, as `(encrypted, count)`.
fn tcp_sessions(server: &Postgres) -> Vec<(bool, i64)> {
    let mut admin = server.connect("postgres").unwrap();
    admin
        .query(
            "SELECT s.ssl, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = 'firegrid' AND a.client_addr IS NOT NULL GROUP BY s.ssl ORDER BY s.ssl",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[test]
fn the_store_talks_to_postgresql_only_over_tls_to_the_server_its_ca_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let (server_files, ca) = PostgresTls::make(&dir.path().join("site")).unwrap();
    let (_, stranger_ca) = PostgresTls::make(&dir.path().join("stranger")).unwrap();
    let server = Postgres::start_tls(&server_files).unwrap();
    let conninfo = server.create_database("firegrid").unwrap();

    // Over TLS, checked against the site's CA: it works, and every session is encrypted.
    let mut store = CaseStore::open_postgres_with(&conninfo, &options(&server, Some(trusting(&ca)))).unwrap();
    assert_eq!(commit_batch(&mut store, 1), 5);
    assert_eq!(store.list(&CaseFilter::default()).unwrap().len(), 5);
    assert_eq!(tcp_sessions(&server), [(true, 1)], "the writer's session, encrypted");

    // Without TLS the server turns the store away (`hostnossl ... reject`).
    let plain = CaseStore::open_postgres_with(&conninfo, &options(&server, None)).unwrap_err();
    assert!(matches!(plain, StoreError::Postgres { operation: "open", .. }), "{plain:?}");
    assert!(plain.to_string().contains("no encryption"), "{plain}");

    // A certificate no configured CA signed: refused during the handshake.
    let forged = CaseStore::open_postgres_with(&conninfo, &options(&server, Some(trusting(&stranger_ca))))
        .unwrap_err();
    assert!(matches!(forged, StoreError::Postgres { operation: "open", .. }), "{forged:?}");
    assert!(forged.to_string().to_lowercase().contains("certificate"), "{forged}");

    // A connection string that turns TLS off contradicts the setting: nothing is sent.
    let disabled = format!("{conninfo} sslmode=disable");
    let contradiction =
        CaseStore::open_postgres_with(&disabled, &options(&server, Some(trusting(&ca)))).unwrap_err();
    assert!(matches!(contradiction, StoreError::Tls { .. }), "{contradiction:?}");

    // None of the refusals shows the password.
    for err in [&plain, &forged, &contradiction] {
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(server.password()), "{shown}");
    }
    assert_eq!(tcp_sessions(&server), [(true, 1)], "no refused attempt left a session behind");
}

/// A server that also asks for the client's certificate (`clientcert=verify-full`: signed by
/// its CA, common name the role): the store's `client_cert` and `client_key` log in, the
/// shared outbox's connection too; no certificate, or one made out to another name, is
/// refused.
#[test]
fn a_server_that_requires_a_client_certificate_admits_the_store_with_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let (server_files, ca) =
        PostgresTls::make_requiring_clients(&site, &[firegrid_tests::postgres::USER, "intruder"]).unwrap();
    let server = Postgres::start_tls(&server_files).unwrap();
    let conninfo = server.create_database("firegrid").unwrap();
    let with_cert = |name: &str| {
        let tls = ClientTls {
            ca: ca.clone(),
            client_cert: Some(site.join(format!("client-{name}.pem"))),
            client_key: Some(site.join(format!("client-{name}.key"))),
        };
        CaseStore::open_postgres_with(&conninfo, &options(&server, Some(tls.client_config().unwrap())))
    };

    let mut store = with_cert(firegrid_tests::postgres::USER).unwrap();
    assert_eq!(commit_batch(&mut store, 1), 5);
    let mut outbox = firegrid_notify::outbox::Store::open_shared(store.shared_outbox().unwrap()).unwrap();
    assert!(outbox.prune(0).is_ok(), "the shared outbox's own connection logs in with the certificate");
    let mut admin = server.connect("postgres").unwrap();
    let names: Vec<String> = admin
        .query(
            "SELECT s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = 'firegrid' AND a.client_addr IS NOT NULL ORDER BY s.client_dn",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names.len(), 2, "the writer and the outbox: {names:?}");
    assert!(names.iter().all(|dn| dn.contains("CN=firegrid")), "{names:?}");
    drop(outbox);
    drop(store);

    // The client may hear only the login method's failure ("password authentication failed");
    // the server's log says why.
    let none = CaseStore::open_postgres_with(&conninfo, &options(&server, Some(trusting(&ca)))).unwrap_err();
    assert!(matches!(none, StoreError::Postgres { operation: "open", .. }), "{none:?}");
    let other = with_cert("intruder").unwrap_err();
    assert!(matches!(other, StoreError::Postgres { operation: "open", .. }), "{other:?}");
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert_eq!(log.matches("connection requires a valid client certificate").count(), 1, "{log}");
    assert_eq!(log.matches("certificate validation (clientcert=verify-full) failed").count(), 1, "{log}");
    assert!(log.contains("CN mismatch"), "{log}");
    for err in [&none, &other] {
        assert!(!err.to_string().contains(server.password()), "{err}");
    }
}

#[test]
fn with_tls_set_a_server_that_declines_it_is_not_spoken_to_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca) = PostgresTls::make(dir.path()).unwrap();
    // A server without TLS: it answers the client's SSLRequest with "no", and a client that
    // fell back would log in in plain text (libpq's default `sslmode=prefer` does).
    let server = Postgres::start().unwrap();
    let conninfo = server.create_database("firegrid").unwrap();
    let err = CaseStore::open_postgres_with(&conninfo, &options(&server, Some(trusting(&ca)))).unwrap_err();
    assert!(matches!(err, StoreError::Postgres { operation: "open", .. }), "{err:?}");
    let mut admin = server.connect("postgres").unwrap();
    let logged_in: i64 = admin
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = 'firegrid'", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged_in, 0, "no session was opened in plain text");
    // Plain text, asked for, still works against this server: the refusal was TLS's.
    CaseStore::open_postgres_with(&conninfo, &options(&server, None)).unwrap();
}

#[test]
fn the_store_follows_its_database_to_the_promoted_standby_without_being_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (server_files, ca) = PostgresTls::make(dir.path()).unwrap();
    let mut primary = Postgres::start_tls(&server_files).unwrap();
    primary.create_database("firegrid").unwrap();
    let standby = Postgres::standby_of(&primary).unwrap();
    make_synchronous(&primary);

    // Both servers in one connection string, the writable one wanted.
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user={} dbname=firegrid target_session_attrs=read-write",
        primary.port(),
        standby.port(),
        firegrid_tests::postgres::USER,
    );
    let mut store =
        CaseStore::open_postgres_with(&conninfo, &options(&primary, Some(trusting(&ca)))).unwrap();
    let mut last = 0;
    for batch in 0..20 {
        last = commit_batch(&mut store, batch);
    }
    assert_eq!(last, 100);
    let before = store.list(&CaseFilter { limit: Some(1000), ..CaseFilter::default() }).unwrap();

    primary.kill().unwrap();
    // The standby is still read-only: the store does not write there, it fails the commit
    // (the alarm loop holds the batch and retries it).
    let refused = try_commit_batch(&mut store, 20).unwrap_err();
    assert!(matches!(refused, StoreError::Postgres { .. }), "{refused:?}");
    let refused_again = try_commit_batch(&mut store, 20).unwrap_err();
    assert!(matches!(refused_again, StoreError::Postgres { .. }), "{refused_again:?}");

    standby.promote().unwrap();
    // The same store, never reopened: the retry reaches the promoted server.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seq = loop {
        match try_commit_batch(&mut store, 20) {
            Ok(seq) => break seq,
            Err(error) => {
                assert!(Instant::now() < deadline, "the store never reached the promoted standby: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(seq, 105, "numbered on from the last commit on the primary, nothing logged twice");
    // Batch 20 touched cases 21-25 (ids wrap at 40); every other case is as the primary had it.
    let after = store.list(&CaseFilter { limit: Some(1000), ..CaseFilter::default() }).unwrap();
    assert_eq!(after.len(), before.len());
    let untouched = |case: &&firegrid_cases::store::StoredCase| !(21..=25).contains(&case.case_id);
    let kept: Vec<_> = before.iter().filter(untouched).collect();
    assert_eq!(kept.len(), 35);
    assert!(kept.iter().all(|case| after.contains(case)), "the primary's cases, unchanged");
    assert_eq!(
        store.timeline(21).unwrap().len(),
        3,
        "batches 4 and 12 on the primary, 20 on the promoted one"
    );
    assert_eq!(store.load().unwrap().inputs.len(), 105);
    assert_eq!(
        tcp_sessions(&standby),
        [(true, 1)],
        "the store's one session, on the promoted server, encrypted"
    );
}

/// A gateway whose connection string names the primary and its standby: the primary is killed
/// with SIGKILL, the standby promoted, and the same gateway process, never restarted, stores
/// the next fire on the promoted server, with everything it had stored before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_carries_on_with_the_promoted_standby_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server_files, ca) = PostgresTls::make(&dir.path().join("certs")).unwrap();
    let (mut primary, standby) = tokio::task::block_in_place(|| {
        let primary = Postgres::start_tls(&server_files).unwrap();
        primary.create_database("firegrid").unwrap();
        let standby = Postgres::standby_of(&primary).unwrap();
        make_synchronous(&primary);
        (primary, standby)
    });
    let broker = Mosquitto::start().unwrap();
    let hook = WebhookReceiver::start().await;
    let password_file = dir.path().join("postgres-password");
    std::fs::write(&password_file, format!("{}\n", primary.password())).unwrap();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user={} dbname=firegrid target_session_attrs=read-write",
        primary.port(),
        standby.port(),
        firegrid_tests::postgres::USER,
    );
    let store = format!("tls = {{ ca = \"{}\" }}", ca.display());
    let config = firegrid_tests::postgres::gateway_config(
        broker.port(),
        hook.port(),
        &conninfo,
        &password_file,
        "gw-fuhai-1",
        &store,
        "",
    );
    let mut gateway = Firegrid::start(config).unwrap();
    let pid = gateway.pid();

    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors", "127.0.0.1", broker.port()), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let (topic, payload) = alarm("x-1");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let page = hook.wait("the first page", Duration::from_secs(20), |v| v["desk"] == "street:fuhai-1").await;
    let first_case = page["case_id"].as_i64().unwrap();
    let stored = |server: &Postgres, condition: &str| count_where(server, "inputs", condition);
    while stored(&primary, "json LIKE '%x-1%'") == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let inputs_on_primary = count(&primary, "inputs");

    tokio::task::block_in_place(|| {
        primary.kill().unwrap();
        standby.promote().unwrap();
    });
    let (topic, payload) = alarm("x-2");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&standby, "json LIKE '%x-2%'") == 0 {
        assert!(
            Instant::now() < deadline,
            "the second fire never reached the promoted server: {}",
            gateway.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gateway.is_running() && gateway.pid() == pid, "the same gateway process throughout");
    assert!(count(&standby, "inputs") > inputs_on_primary, "the primary's inputs and the new ones");
    assert_eq!(count_where(&standby, "cases", &format!("case_id = {first_case}")), 1);
    let log = std::fs::read_to_string(gateway.log_path()).unwrap();
    assert!(!log.contains(primary.password()), "the password is never logged");
}
