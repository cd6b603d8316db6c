//! The RTSP `OPTIONS` probe (RFC 2326 §10.1): connect to the channel's RTSP server, ask for
//! its options, read the status line. Any RTSP answer, `200 OK` or `401 Unauthorized` alike,
//! proves the stream server of that channel is up, which is all the health check needs; a
//! timeout, a refused connection or something that is not RTSP is a failure.
//!
//! `OPTIONS` needs no session and no media, so the probe costs the camera one short TCP
//! exchange. The request and the status-line parser are pure; [`probe`] is the I/O.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest answer header read.
const MAX_ANSWER: usize = 8 * 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `rtsp://host[:port]/...`.
    #[error("not an rtsp:// URL")]
    BadUrl,
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not RTSP.
    #[error("not an RTSP answer")]
    NotRtsp,
}

/// `host:port` of an `rtsp://` URL (port 554 when absent), credentials stripped.
pub fn target(url: &str) -> Option<String> {
    let rest = url.strip_prefix("rtsp://").or_else(|| url.strip_prefix("RTSP://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    if host_port.is_empty() {
        return None;
    }
    let has_port = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].contains(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port { host_port.to_owned() } else { format!("{host_port}:554") })
}

/// The `OPTIONS` request for `url`, without the credentials a URL may carry.
pub fn request(url: &str) -> String {
    let clean = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            format!("{scheme}://{}{path}", authority.rsplit('@').next().unwrap_or(authority))
        }
        None => url.to_owned(),
    };
    format!("OPTIONS {clean} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: firegrid-camera\r\n\r\n")
}

/// The status code of an RTSP answer once its status line is complete; `Ok(None)` while it
/// is not.
///
/// # Errors
/// [`ProbeError::NotRtsp`] when the bytes cannot be an RTSP status line.
pub fn status(answer: &[u8]) -> Result<Option<u16>, ProbeError> {
    let Some(end) = answer.iter().position(|&b| b == b'\n') else {
        return if answer.len() > 256 || !b"RTSP/".iter().zip(answer).all(|(a, b)| a == b) {
            Err(ProbeError::NotRtsp)
        } else {
            Ok(None)
        };
    };
    let line = String::from_utf8_lossy(&answer[..end]);
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or_default();
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("RTSP/1.") && (100..600).contains(&code) => Ok(Some(code)),
        _ => Err(ProbeError::NotRtsp),
    }
}

/// Probes `url` within `timeout` and returns the RTSP status code.
///
/// # Errors
/// See [`ProbeError`].
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let target = target(url).ok_or(ProbeError::BadUrl)?;
    let exchange = async {
        let mut stream = TcpStream::connect(&target).await?;
        stream.write_all(request(url).as_bytes()).await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(ProbeError::NotRtsp);
            }
            answer.extend_from_slice(&buf[..n]);
            if let Some(code) = status(&answer)? {
                return Ok(code);
            }
            if answer.len() > MAX_ANSWER {
                return Err(ProbeError::NotRtsp);
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| ProbeError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let check = |url, expected: Option<&str>| assert_eq!(target(url).as_deref(), expected, "{url}");
        check("rtsp://192.0.2.1/Streaming/Channels/101", Some("192.0.2.1:554"));
        check("rtsp://admin:pw@192.0.2.1:8554/cam/realmonitor?channel=1", Some("192.0.2.1:8554"));
        check("rtsp://[2001:db8::1]/x", Some("[2001:db8::1]:554"));
        check("rtsp://[2001:db8::1]:10554/x", Some("[2001:db8::1]:10554"));
        check("http://192.0.2.1/", None);
        check("rtsp:///x", None);
    }

    #[test]
    fn requests_carry_no_credentials() {
        assert_eq!(
            request("rtsp://admin:secret@192.0.2.1:554/Streaming/Channels/101"),
            "OPTIONS rtsp://192.0.2.1:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: firegrid-camera\r\n\r\n"
        );
    }

    #[test]
    fn status_lines() {
        let check = |answer: &[u8], expected: Result<Option<u16>, ()>| {
            assert_eq!(status(answer).map_err(|_| ()), expected, "{:?}", String::from_utf8_lossy(answer));
        };
        check(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n", Ok(Some(200)));
        check(b"RTSP/1.0 401 Unauthorized\r\n", Ok(Some(401)));
        check(b"RTSP/1.0 2", Ok(None));
        check(b"RTS", Ok(None));
        check(b"HTTP/1.1 200 OK\r\n", Err(()));
        check(b"SSH-2.0-OpenSSH_9.6\r\n", Err(()));
        check(b"RTSP/1.0 abc\r\n", Err(()));
    }
}
