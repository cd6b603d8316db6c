//! Integration tests for firegrid against real servers.
//!
//! For now they prove the `firegrid_tests` harness itself with real round trips: MQTT through
//! Mosquitto, InfluxQL through InfluxDB 1.x, and InfluxDB line protocol into VictoriaMetrics,
//! each across a server restart.

mod alarm_loop;
mod chaos;
mod clock;
mod console;
mod dashboards;
mod demo;
mod e2e;
mod failover;
mod fire_first;
mod gateway;
mod harness;
mod influx_sink;
mod influxdb_v1;
mod linkage;
mod modbus;
mod mqtt;
mod nbiot;
mod ota;
mod postgres_store;
mod postgres_tls;
mod sick_disk;
mod sim;
mod tls;
mod trust;
mod unplaced;
mod victoria_metrics;
