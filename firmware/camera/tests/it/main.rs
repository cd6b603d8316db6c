//! Integration tests of the camera agent against real servers: a camera HTTP server (axum,
//! on 127.0.0.1:0) streaming the fixtures, a real Mosquitto started by each test
//! (`firegrid_tests::Mosquitto`), and a subscriber acting as the gateway.

mod agent;
mod camera;
mod cli;
mod gateway;
