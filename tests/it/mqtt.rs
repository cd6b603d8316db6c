//! Mosquitto: QoS 1 round trips with `rumqttc`, and queued messages across a broker restart.

use std::time::Duration;

use firegrid_tests::Mosquitto;
use rumqttc::{AsyncClient, ConnAck, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn options(broker: &Mosquitto, client_id: &str, clean_session: bool) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(clean_session);
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// Connects and polls until the CONNACK.
async fn connect(options: MqttOptions) -> (AsyncClient, EventLoop, ConnAck) {
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let connack = timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(ack)) = eventloop.poll().await.unwrap() {
                return ack;
            }
        }
    })
    .await
    .expect("no CONNACK");
    (client, eventloop, connack)
}

async fn subscribe(client: &AsyncClient, eventloop: &mut EventLoop, filter: &str) {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = eventloop.poll().await.unwrap() {
                assert_eq!(ack.return_codes, [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
                return;
            }
        }
    })
    .await
    .expect("no SUBACK");
}

/// Polls until `count` PUBLISH packets arrived (acknowledged automatically) and returns them.
async fn receive(eventloop: &mut EventLoop, count: usize) -> Vec<Publish> {
    let mut received = Vec::with_capacity(count);
    let result = timeout(WAIT, async {
        while received.len() < count {
            if let Event::Incoming(Packet::Publish(publish)) = eventloop.poll().await.unwrap() {
                received.push(publish);
            }
        }
    })
    .await;
    assert!(result.is_ok(), "received only {} of {count} messages", received.len());
    received
}

/// Publishes every `(topic, payload)` at QoS 1 and waits for all PUBACKs.
async fn publish_all(broker: &Mosquitto, client_id: &str, messages: &[(String, Vec<u8>)]) {
    let (client, mut eventloop, _) = connect(options(broker, client_id, true)).await;
    let expected = messages.len();
    let driver = tokio::spawn(async move {
        let mut acks = 0;
        while acks < expected {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acks += 1;
            }
        }
        eventloop
    });
    for (topic, payload) in messages {
        client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
    }
    let mut eventloop = timeout(WAIT, driver).await.expect("not every publish was acknowledged").unwrap();
    disconnect(&client, &mut eventloop).await;
}

/// Sends DISCONNECT and polls until the broker has closed the connection.
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    client.disconnect().await.unwrap();
    timeout(WAIT, async {
        let mut sent = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => sent = true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        sent
    })
    .await
    .map(|sent| assert!(sent, "DISCONNECT was never sent"))
    .expect("the connection did not close after DISCONNECT");
}

/// Waits until the broker's log says `client_id` disconnected.
async fn wait_for_log(broker: &Mosquitto, needle: &str) {
    timeout(WAIT, async {
        while !broker.log_tail(200).contains(needle) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} never appeared in the log:\n{}", broker.log_tail(40)));
}

#[tokio::test]
async fn qos1_round_trip_keeps_payloads_exact() {
    let broker = Mosquitto::start().unwrap();
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));

    let (subscriber, mut sub_loop, connack) = connect(options(&broker, "firegrid-it-sub", true)).await;
    assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
    subscribe(&subscriber, &mut sub_loop, "firegrid/site/+/alarm").await;

    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let messages = vec![
        ("firegrid/site/hq/alarm".to_owned(), br#"{"zone":"Hall A","smoke":true}"#.to_vec()),
        ("firegrid/site/annex/alarm".to_owned(), vec![0x00, 0xff, 0x10, 0x80, 0x00]),
        ("firegrid/site/hq/alarm".to_owned(), Vec::new()),
        ("firegrid/site/lab/alarm".to_owned(), big),
        // Not matched by the filter: must not arrive.
        ("firegrid/site/hq/status".to_owned(), b"ignored".to_vec()),
    ];
    publish_all(&broker, "firegrid-it-pub", &messages).await;

    let received = receive(&mut sub_loop, 4).await;
    let got: Vec<(String, Vec<u8>)> =
        received.iter().map(|p| (p.topic.clone(), p.payload.to_vec())).collect();
    assert_eq!(got, messages[..4]);
    assert!(received.iter().all(|p| p.qos == QoS::AtLeastOnce));

    // Nothing else is delivered (the status message was not subscribed to).
    let extra = timeout(Duration::from_millis(300), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
                return p;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "unexpected message: {extra:?}");
}

#[tokio::test]
async fn queued_messages_survive_a_broker_restart() {
    // More than mosquitto's default max_queued_messages (1000), which would drop the rest.
    const N: usize = 2500;
    const SUBSCRIBER: &str = "firegrid-it-persistent-sub";
    let mut broker = Mosquitto::start().unwrap();

    // A persistent session subscribes, then goes offline.
    let (subscriber, mut sub_loop, connack) = connect(options(&broker, SUBSCRIBER, false)).await;
    assert!(!connack.session_present);
    subscribe(&subscriber, &mut sub_loop, "firegrid/queue/#").await;
    disconnect(&subscriber, &mut sub_loop).await;
    drop((subscriber, sub_loop));
    wait_for_log(&broker, &format!("Client {SUBSCRIBER} disconnected")).await;

    // While it is offline, N QoS 1 messages are queued for it.
    let messages: Vec<(String, Vec<u8>)> =
        (0..N).map(|i| (format!("firegrid/queue/{}", i % 3), format!("alarm-{i:05}").into_bytes())).collect();
    publish_all(&broker, "firegrid-it-queue-pub", &messages).await;

    // A graceful stop writes the queue to the persistence file; the restart reads it back.
    broker.stop().unwrap();
    let db = broker.data_dir().join("mosquitto.db");
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    assert!(size > (N * 10) as u64, "{} holds only {size} bytes", db.display());
    let port = broker.port();
    broker.restart().unwrap();
    assert_eq!(broker.port(), port);

    // The subscriber comes back to its session and gets every message, in order.
    let (_subscriber, mut sub_loop, connack) = connect(options(&broker, SUBSCRIBER, false)).await;
    assert!(connack.session_present, "the persistent session was lost");
    let received = receive(&mut sub_loop, N).await;
    let got: Vec<(String, Vec<u8>)> = received.into_iter().map(|p| (p.topic, p.payload.to_vec())).collect();
    assert_eq!(got.len(), N);
    assert!(got == messages, "messages differ after the restart");
}
