//! The guests' users: a client in the client namespace that pings each
//! guest every 20 ms and holds one TCP connection to its echo port (a line
//! every 50 ms, the echo expected back), and at the end fetches its page.
//! What a VM's owner judges a migration by: did the clients notice?
//!
//! Timings are recorded, never judged here: tests print them.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::netns::{self, NetnsError};

const PING_EVERY: Duration = Duration::from_millis(20);
const ECHO_EVERY: Duration = Duration::from_millis(50);
/// Echo port of the lab guests (`nc -ll -p 7 -e /bin/cat`).
pub const ECHO_PORT: u16 = 7;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("client namespace")]
    Netns(#[from] NetnsError),
    #[error("could not open a raw ICMP socket")]
    IcmpSocket(#[source] std::io::Error),
    #[error("could not connect to {guest} ({addr}) port {port}")]
    Connect {
        guest: String,
        addr: Ipv4Addr,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("socket setup")]
    Setup(#[source] std::io::Error),
}

/// A guest to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub guest: String,
    pub addr: Ipv4Addr,
}

/// Longest, median and 95th-percentile silence, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Silences {
    pub longest_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// When the longest silence began (seconds since the probe started),
    /// to place it against what happened meanwhile.
    pub longest_from_s: f64,
}

/// What one guest's client saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestProbe {
    pub guest: String,
    pub addr: Ipv4Addr,
    pub seconds: f64,
    pub pings_sent: u64,
    pub ping_replies: u64,
    /// Gaps between consecutive ping replies (and from the last one to the
    /// end): the longest is how long the guest was unreachable.
    pub ping_silence: Silences,
    /// When the last ping reply came (seconds since the start).
    pub last_ping_reply_s: Option<f64>,
    pub echoes_sent: u64,
    pub echoes_back: u64,
    /// Gaps between consecutive TCP echoes (and from the last to the end).
    pub echo_silence: Silences,
    /// When the last echo came back (seconds since the start).
    pub last_echo_s: Option<f64>,
    /// The one TCP connection lasted the whole run: no reset, no EOF, no
    /// error, every echo in order.
    pub tcp_survived: bool,
    pub tcp_error: Option<String>,
    /// A fresh HTTP GET of the guest's page at the end: its first line.
    pub http: Result<String, String>,
}

impl GuestProbe {
    /// One line for a test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}): ping {}/{} replies, longest silence {:.0} ms (p50 {:.0}, p95 {:.0}); \
             tcp echo {}/{}, longest silence {:.0} ms, connection {}; http {}",
            self.guest,
            self.addr,
            self.ping_replies,
            self.pings_sent,
            self.ping_silence.longest_ms,
            self.ping_silence.p50_ms,
            self.ping_silence.p95_ms,
            self.echoes_back,
            self.echoes_sent,
            self.echo_silence.longest_ms,
            if self.tcp_survived {
                "survived".to_owned()
            } else {
                format!(
                    "LOST ({})",
                    self.tcp_error.as_deref().unwrap_or("echo missing")
                )
            },
            match &self.http {
                Ok(body) => format!("ok ({body})"),
                Err(e) => format!("FAILED ({e})"),
            }
        )
    }
}

/// The gaps between consecutive instants (seconds from a common start),
/// and from the last one to `end`; none when nothing was seen.
pub fn gaps(times: &[f64], end: f64) -> Vec<f64> {
    if times.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    v.push((end - times[times.len() - 1]).max(0.0));
    v
}

/// The `p`-th percentile (0..=100, nearest rank) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Silences of a series of reply instants over a run of `end` seconds;
/// a run with no reply at all was silent throughout.
pub fn silences(times: &[f64], end: f64) -> Silences {
    let g = gaps(times, end);
    if g.is_empty() {
        let all = end * 1000.0;
        return Silences {
            longest_ms: all,
            p50_ms: all,
            p95_ms: all,
            longest_from_s: 0.0,
        };
    }
    let ms = |x: Option<f64>| x.unwrap_or(0.0) * 1000.0;
    // gaps()[i] begins at times[i].
    let longest = (0..g.len()).fold(0, |best, i| if g[i] > g[best] { i } else { best });
    Silences {
        longest_ms: ms(Some(g[longest])),
        p50_ms: ms(percentile(&g, 50.0)),
        p95_ms: ms(percentile(&g, 95.0)),
        longest_from_s: times[longest],
    }
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"rackside-probe..");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// From a packet a raw ICMP socket received (IPv4 header first): the
/// sender, when it is an echo reply carrying `id`.
pub fn echo_reply_from(packet: &[u8], id: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    let ours = *icmp.first()? == 0 && icmp.get(4..6)? == id.to_be_bytes();
    let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    ours.then_some(Ipv4Addr::from(src))
}

fn raw_icmp_socket() -> std::io::Result<UdpSocket> {
    // SAFETY: socket(2) with constant arguments; the descriptor it returns
    // is checked and then owned by exactly one OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // A raw IPv4 socket takes sendto/recvfrom with sockaddr_in exactly as a
    // UDP socket does: std's UdpSocket gives timeouts and addresses safely.
    Ok(UdpSocket::from(owned))
}

#[derive(Debug, Default)]
struct TcpRecord {
    sent: u64,
    echoes: Vec<f64>,
    error: Option<String>,
}

/// A running probe; [`Probe::finish`] stops it and reports per guest.
#[derive(Debug)]
pub struct Probe {
    netns: String,
    targets: Vec<ProbeTarget>,
    start: Instant,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<u64>>,
    replies: Arc<Mutex<Vec<Vec<f64>>>>,
    threads: Vec<JoinHandle<()>>,
    tcp: Vec<Arc<Mutex<TcpRecord>>>,
}

impl Probe {
    /// Connects to every target's echo port from namespace `netns` (the
    /// lab's client namespace) and starts pinging and echoing.
    pub fn start(netns: &str, targets: &[ProbeTarget]) -> Result<Probe, ProbeError> {
        let (icmp, streams) = netns::run_in(netns, || -> Result<_, ProbeError> {
            let icmp = raw_icmp_socket().map_err(ProbeError::IcmpSocket)?;
            let mut streams = Vec::new();
            for t in targets {
                streams.push(connect(t, ECHO_PORT)?);
            }
            Ok((icmp, streams))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let mut p = Probe {
            netns: netns.to_owned(),
            targets: targets.to_vec(),
            start,
            stop: stop.clone(),
            sent: Arc::new(Mutex::new(0)),
            replies: Arc::new(Mutex::new(vec![Vec::new(); targets.len()])),
            threads: Vec::new(),
            tcp: Vec::new(),
        };
        let id = (std::process::id() & 0xffff) as u16;
        icmp.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(ProbeError::Setup)?;
        let rx = icmp.try_clone().map_err(ProbeError::Setup)?;
        let addrs: Vec<Ipv4Addr> = targets.iter().map(|t| t.addr).collect();
        {
            let (stop, sent, addrs) = (stop.clone(), p.sent.clone(), addrs.clone());
            p.threads.push(std::thread::spawn(move || {
                let mut seq: u16 = 0;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    seq = seq.wrapping_add(1);
                    for a in &addrs {
                        // A send error (no route for a moment) is a lost ping.
                        let _ = icmp.send_to(&echo_request(id, seq), SocketAddr::from((*a, 0)));
                    }
                    *sent.lock().expect("probe counter") += 1;
                    next += PING_EVERY;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }));
        }
        {
            let (stop, replies) = (stop.clone(), p.replies.clone());
            p.threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = rx.recv_from(&mut buf) else {
                        continue;
                    };
                    let at = start.elapsed().as_secs_f64();
                    if let Some(src) = echo_reply_from(&buf[..n], id) {
                        if let Some(i) = addrs.iter().position(|a| *a == src) {
                            replies.lock().expect("probe replies")[i].push(at);
                        }
                    }
                }
            }));
        }
        for stream in streams {
            let rec = Arc::new(Mutex::new(TcpRecord::default()));
            p.tcp.push(rec.clone());
            let (w, r) = echo_threads(stream, rec, stop.clone(), start)?;
            p.threads.push(w);
            p.threads.push(r);
        }
        Ok(p)
    }

    /// Seconds since the probe started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Stops pinging and echoing, fetches each guest's page, and reports.
    pub fn finish(self) -> Vec<GuestProbe> {
        self.stop.store(true, Ordering::Relaxed);
        let end = self.start.elapsed().as_secs_f64();
        for t in self.threads {
            let _ = t.join();
        }
        let sent = *self.sent.lock().expect("probe counter");
        let replies = self.replies.lock().expect("probe replies").clone();
        self.targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let tcp = self.tcp[i].lock().expect("probe tcp");
                let pings: Vec<f64> = replies[i].iter().copied().filter(|x| *x <= end).collect();
                let echoes: Vec<f64> = tcp.echoes.iter().copied().filter(|x| *x <= end).collect();
                GuestProbe {
                    guest: t.guest.clone(),
                    addr: t.addr,
                    seconds: end,
                    pings_sent: sent,
                    ping_replies: pings.len() as u64,
                    ping_silence: silences(&pings, end),
                    last_ping_reply_s: pings.last().copied(),
                    echoes_sent: tcp.sent,
                    echoes_back: tcp.echoes.len() as u64,
                    echo_silence: silences(&echoes, end),
                    last_echo_s: echoes.last().copied(),
                    tcp_survived: tcp.error.is_none() && !tcp.echoes.is_empty(),
                    tcp_error: tcp.error.clone(),
                    http: http_get(&self.netns, t.addr),
                }
            })
            .collect()
    }
}

fn connect(t: &ProbeTarget, port: u16) -> Result<TcpStream, ProbeError> {
    let addr = SocketAddr::from((t.addr, port));
    let err = |source| ProbeError::Connect {
        guest: t.guest.clone(),
        addr: t.addr,
        port,
        source,
    };
    // A guest just booted may not listen yet: a few tries.
    let mut last = None;
    for _ in 0..20 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(err(last.unwrap_or_else(|| ErrorKind::TimedOut.into())))
}

fn echo_line(n: u64) -> String {
    format!("rackside-probe {n}\n")
}

fn echo_threads(
    stream: TcpStream,
    rec: Arc<Mutex<TcpRecord>>,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> Result<(JoinHandle<()>, JoinHandle<()>), ProbeError> {
    stream.set_nodelay(true).map_err(ProbeError::Setup)?;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(ProbeError::Setup)?;
    let mut w = stream.try_clone().map_err(ProbeError::Setup)?;
    let fail = |rec: &Mutex<TcpRecord>, e: String| {
        let mut r = rec.lock().expect("probe tcp");
        r.error.get_or_insert(e);
    };
    let writer = {
        let (rec, stop) = (rec.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && rec.lock().expect("probe tcp").error.is_none() {
                n += 1;
                if let Err(e) = w.write_all(echo_line(n).as_bytes()) {
                    fail(&rec, format!("write: {e}"));
                    return;
                }
                rec.lock().expect("probe tcp").sent = n;
                next += ECHO_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut pending = Vec::new();
        let mut expect = 1;
        // After the stop, the echoes still under way get a moment.
        let mut grace: Option<Instant> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                let until = *grace.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                let all_back = rec.lock().expect("probe tcp").sent < expect;
                if all_back || Instant::now() >= until {
                    return;
                }
            }
            match r.read_until(b'\n', &mut pending) {
                Ok(0) => {
                    fail(&rec, "closed by the guest (EOF)".into());
                    return;
                }
                Ok(_) if pending.ends_with(b"\n") => {
                    let at = start.elapsed().as_secs_f64();
                    if pending != echo_line(expect).as_bytes() {
                        fail(
                            &rec,
                            format!(
                                "echo {expect} came back as {:?}",
                                String::from_utf8_lossy(&pending)
                            ),
                        );
                        return;
                    }
                    rec.lock().expect("probe tcp").echoes.push(at);
                    expect += 1;
                    pending.clear();
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    fail(&rec, format!("read: {e}"));
                    return;
                }
            }
        }
    });
    Ok((writer, reader))
}

/// A fresh HTTP/1.0 GET of `/` from namespace `netns`: the page's first
/// line on a 200, else what went wrong.
pub fn http_get(netns: &str, addr: Ipv4Addr) -> Result<String, String> {
    let fetch = || -> Result<String, String> {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((addr, 80)), Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
        parse_http(&String::from_utf8_lossy(&resp))
    };
    netns::run_in(netns, fetch).map_err(|e| e.to_string())?
}

/// The first body line of an HTTP 200 response; the status line otherwise.
pub fn parse_http(resp: &str) -> Result<String, String> {
    let status = resp.lines().next().unwrap_or("");
    let ok = status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200");
    if !ok {
        return Err(format!("status {status:?}"));
    }
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .lines()
        .next()
        .unwrap_or("");
    Ok(body.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_run_between_replies_and_to_the_end() {
        assert_eq!(gaps(&[], 5.0), Vec::<f64>::new());
        let g = gaps(&[1.0, 1.5, 3.0], 3.25);
        assert_eq!(g, vec![0.5, 1.5, 0.25]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn silences_summarise_gaps_and_a_silent_run() {
        let s = silences(&[0.0, 0.02, 0.04, 0.5, 0.52], 0.54);
        assert!((s.longest_ms - 460.0).abs() < 1e-6, "{s:?}");
        assert!((s.p50_ms - 20.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.longest_from_s, 0.04, "the longest began at 0.04 s");
        let none = silences(&[], 2.0);
        assert_eq!(none.longest_ms, 2000.0);
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let p = echo_request(0x1234, 7);
        assert_eq!(p[0], 8);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        // RFC 1071's example.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn echo_replies_are_told_from_other_icmp() {
        let mut reply = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 78, 0, 11, 10, 78, 0, 254,
        ];
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert_eq!(
            echo_reply_from(&reply, 0x1234),
            Some(Ipv4Addr::new(10, 78, 0, 11))
        );
        assert_eq!(echo_reply_from(&reply, 0x4321), None);
        reply[20] = 3; // destination unreachable
        assert_eq!(echo_reply_from(&reply, 0x1234), None);
        assert_eq!(echo_reply_from(&[0x45], 1), None);
    }

    #[test]
    fn http_responses_are_judged_by_status() {
        assert_eq!(
            parse_http("HTTP/1.0 200 OK\r\nContent-type: text/html\r\n\r\nrackside-guest web1\n"),
            Ok("rackside-guest web1".into())
        );
        assert!(parse_http("HTTP/1.0 404 Not Found\r\n\r\n").is_err());
        assert!(parse_http("").is_err());
    }
}
