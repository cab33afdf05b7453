//! Telnet (RFC 854, 855; option states after RFC 1143) as a pure state
//! machine: bytes from the network in, data bytes and reply bytes out.
//! The transport (`line::telnet`) does the I/O around it.
//!
//! What we agree to: BINARY (RFC 856) and SUPPRESS-GO-AHEAD (RFC 858), in
//! both directions, which is all a console-server port needs to pass the
//! agent's lines through untouched. Everything else is refused (`DONT` to
//! a `WILL`, `WONT` to a `DO`); in particular remote ECHO, so our requests
//! do not come back at us. A request that only confirms the state an
//! option is already in is not answered, so two peers never loop.
//! Subnegotiations (`SB ... SE`) are followed to their end and dropped:
//! we agree to no option that has any.

/// Interpret As Command.
pub const IAC: u8 = 255;
pub const DONT: u8 = 254;
pub const DO: u8 = 253;
pub const WONT: u8 = 252;
pub const WILL: u8 = 251;
/// Subnegotiation begin.
pub const SB: u8 = 250;
/// Subnegotiation end.
pub const SE: u8 = 240;
pub const NOP: u8 = 241;

pub const OPT_BINARY: u8 = 0;
pub const OPT_ECHO: u8 = 1;
pub const OPT_SGA: u8 = 3;

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;

/// Longest subnegotiation followed; past it we assume its `IAC SE` was
/// lost and read data again, so no stream can swallow the session.
pub const MAX_SUBNEGOTIATION: usize = 4096;

/// The options we agree to, in either direction.
fn supported(option: u8) -> bool {
    matches!(option, OPT_BINARY | OPT_SGA)
}

/// One side of one option.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Side {
    #[default]
    No,
    Yes,
    /// We asked for it and wait for the answer.
    WantYes,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Data,
    /// Data after a CR: a NUL now is the second half of "CR NUL".
    AfterCr,
    Iac,
    /// After IAC WILL/WONT/DO/DONT: the option byte follows.
    Verb(u8),
    /// Inside IAC SB ..., bytes seen so far.
    Sub(usize),
    /// After an IAC inside a subnegotiation.
    SubIac(usize),
}

/// What one call to [`Telnet::receive`] produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    /// The data bytes, telnet commands removed.
    pub data: Vec<u8>,
    /// Bytes to send back (option answers).
    pub reply: Vec<u8>,
}

/// The telnet state of one connection.
#[derive(Debug, Clone)]
pub struct Telnet {
    state: State,
    /// Options enabled on our side (we do them).
    us: [Side; 256],
    /// Options enabled on the other side (it does them).
    him: [Side; 256],
}

impl Default for Telnet {
    fn default() -> Self {
        Self::new()
    }
}

impl Telnet {
    pub fn new() -> Self {
        Telnet {
            state: State::Data,
            us: [Side::No; 256],
            him: [Side::No; 256],
        }
    }

    /// What we ask for when the connection opens: BINARY and SGA both
    /// ways. A server that ignores it leaves us in plain NVT, which works
    /// too (see [`Telnet::encode`]).
    pub fn start(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for option in [OPT_BINARY, OPT_SGA] {
            self.us[option as usize] = Side::WantYes;
            out.extend_from_slice(&[IAC, WILL, option]);
            self.him[option as usize] = Side::WantYes;
            out.extend_from_slice(&[IAC, DO, option]);
        }
        out
    }

    /// True when we send in BINARY (no CR NUL needed).
    pub fn sending_binary(&self) -> bool {
        self.us[OPT_BINARY as usize] == Side::Yes
    }

    /// True when the other side sends in BINARY (a CR NUL is then data).
    pub fn receiving_binary(&self) -> bool {
        self.him[OPT_BINARY as usize] == Side::Yes
    }

    /// True when we agreed that the other side does `option`.
    pub fn remote_enabled(&self, option: u8) -> bool {
        self.him[option as usize] == Side::Yes
    }

    /// True when we agreed to do `option` ourselves.
    pub fn local_enabled(&self, option: u8) -> bool {
        self.us[option as usize] == Side::Yes
    }

    /// Feeds bytes from the network.
    pub fn receive(&mut self, bytes: &[u8]) -> Received {
        let mut out = Received::default();
        for &byte in bytes {
            self.byte(byte, &mut out);
        }
        out
    }

    /// Data to send as it goes on the wire: 255 doubled, and outside
    /// BINARY a bare CR sent as CR NUL (NVT: a CR is followed by LF or NUL).
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 4);
        let binary = self.sending_binary();
        for (i, &byte) in data.iter().enumerate() {
            out.push(byte);
            if byte == IAC {
                out.push(IAC);
            } else if byte == CR && !binary && data.get(i + 1) != Some(&LF) {
                out.push(NUL);
            }
        }
        out
    }

    fn byte(&mut self, byte: u8, out: &mut Received) {
        self.state = match self.state {
            State::Data => self.data(byte, out),
            State::AfterCr if byte == NUL && !self.receiving_binary() => State::Data,
            State::AfterCr => self.data(byte, out),
            State::Iac => match byte {
                IAC => {
                    out.data.push(IAC);
                    State::Data
                }
                WILL | WONT | DO | DONT => State::Verb(byte),
                SB => State::Sub(0),
                // NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, a stray SE:
                // nothing a line of text needs.
                _ => State::Data,
            },
            State::Verb(verb) => {
                self.negotiate(verb, byte, &mut out.reply);
                State::Data
            }
            State::Sub(n) if n >= MAX_SUBNEGOTIATION => self.data(byte, out),
            State::Sub(n) if byte == IAC => State::SubIac(n),
            State::Sub(n) => State::Sub(n + 1),
            State::SubIac(_) if byte == SE => State::Data,
            State::SubIac(n) if byte == IAC => State::Sub(n + 1),
            // IAC and anything else inside SB: the SE was lost; take it as
            // the command it says.
            State::SubIac(_) => {
                self.state = State::Iac;
                self.byte(byte, out);
                return;
            }
        };
    }

    fn data(&mut self, byte: u8, out: &mut Received) -> State {
        match byte {
            IAC => State::Iac,
            CR => {
                out.data.push(CR);
                State::AfterCr
            }
            _ => {
                out.data.push(byte);
                State::Data
            }
        }
    }

    fn negotiate(&mut self, verb: u8, option: u8, reply: &mut Vec<u8>) {
        let (side, yes, no) = match verb {
            // It offers or refuses to do the option: we answer DO / DONT.
            WILL | WONT => (&mut self.him[option as usize], DO, DONT),
            // It asks us to do the option or not: we answer WILL / WONT.
            _ => (&mut self.us[option as usize], WILL, WONT),
        };
        let enable = matches!(verb, WILL | DO);
        match (enable, *side) {
            (true, Side::No) if supported(option) => {
                *side = Side::Yes;
                reply.extend_from_slice(&[IAC, yes, option]);
            }
            (true, Side::No) => reply.extend_from_slice(&[IAC, no, option]),
            // Our own request answered.
            (true, Side::WantYes) => *side = Side::Yes,
            (true, Side::Yes) => {}
            (false, Side::Yes) => {
                *side = Side::No;
                reply.extend_from_slice(&[IAC, no, option]);
            }
            // Our request refused, or nothing to change.
            (false, Side::WantYes | Side::No) => *side = Side::No,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTYPE: u8 = 24;
    const NAWS: u8 = 31;

    /// Feeds `bytes` one at a time, as the worst network would split them.
    fn byte_by_byte(t: &mut Telnet, bytes: &[u8]) -> Received {
        let mut all = Received::default();
        for &b in bytes {
            let r = t.receive(&[b]);
            all.data.extend(r.data);
            all.reply.extend(r.reply);
        }
        all
    }

    #[test]
    fn plain_data_passes_through() {
        let mut t = Telnet::new();
        let r = byte_by_byte(&mut t, b"{\"id\":1}\r\n");
        assert_eq!(r.data, b"{\"id\":1}\r\n");
        assert!(r.reply.is_empty());
    }

    #[test]
    fn doubled_iac_is_one_data_byte() {
        let mut t = Telnet::new();
        let r = byte_by_byte(&mut t, &[b'a', IAC, IAC, b'b']);
        assert_eq!(r.data, [b'a', 255, b'b']);
        assert!(r.reply.is_empty());
    }

    #[test]
    fn accepts_sga_and_binary_offers() {
        let mut t = Telnet::new();
        let r = byte_by_byte(&mut t, &[IAC, WILL, OPT_SGA, IAC, WILL, OPT_BINARY]);
        assert!(r.data.is_empty());
        assert_eq!(r.reply, [IAC, DO, OPT_SGA, IAC, DO, OPT_BINARY]);
        assert!(t.remote_enabled(OPT_SGA) && t.receiving_binary());
    }

    #[test]
    fn agrees_to_do_sga_and_binary() {
        let mut t = Telnet::new();
        let r = byte_by_byte(&mut t, &[IAC, DO, OPT_BINARY, IAC, DO, OPT_SGA]);
        assert_eq!(r.reply, [IAC, WILL, OPT_BINARY, IAC, WILL, OPT_SGA]);
        assert!(t.sending_binary() && t.local_enabled(OPT_SGA));
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        let mut t = Telnet::new();
        let r = byte_by_byte(
            &mut t,
            &[
                IAC, WILL, OPT_ECHO, IAC, DO, TTYPE, IAC, DO, NAWS, IAC, WILL, 200,
            ],
        );
        assert_eq!(
            r.reply,
            [IAC, DONT, OPT_ECHO, IAC, WONT, TTYPE, IAC, WONT, NAWS, IAC, DONT, 200]
        );
        assert!(!t.remote_enabled(OPT_ECHO) && !t.local_enabled(TTYPE));
    }

    #[test]
    fn refusing_twice_does_not_change_state() {
        // A server that repeats its offer gets the same refusal, and the
        // option stays off.
        let mut t = Telnet::new();
        let r = byte_by_byte(&mut t, &[IAC, WILL, OPT_ECHO, IAC, WILL, OPT_ECHO]);
        assert_eq!(r.reply, [IAC, DONT, OPT_ECHO, IAC, DONT, OPT_ECHO]);
        assert!(!t.remote_enabled(OPT_ECHO));
    }

    #[test]
    fn a_confirmation_is_not_answered() {
        let mut t = Telnet::new();
        byte_by_byte(&mut t, &[IAC, WILL, OPT_SGA]);
        let r = byte_by_byte(&mut t, &[IAC, WILL, OPT_SGA, IAC, WONT, OPT_ECHO]);
        assert!(r.reply.is_empty(), "{:?}", r.reply);
    }

    #[test]
    fn wont_and_dont_switch_an_enabled_option_off_with_an_answer() {
        let mut t = Telnet::new();
        byte_by_byte(&mut t, &[IAC, WILL, OPT_BINARY, IAC, DO, OPT_BINARY]);
        let r = byte_by_byte(&mut t, &[IAC, WONT, OPT_BINARY, IAC, DONT, OPT_BINARY]);
        assert_eq!(r.reply, [IAC, DONT, OPT_BINARY, IAC, WONT, OPT_BINARY]);
        assert!(!t.receiving_binary() && !t.sending_binary());
    }

    #[test]
    fn our_own_requests_are_acknowledged_without_a_loop() {
        let mut t = Telnet::new();
        let start = t.start();
        assert_eq!(
            start,
            [IAC, WILL, OPT_BINARY, IAC, DO, OPT_BINARY, IAC, WILL, OPT_SGA, IAC, DO, OPT_SGA]
        );
        // The server agrees to BINARY and SGA, and refuses to do SGA.
        let r = byte_by_byte(
            &mut t,
            &[
                IAC, DO, OPT_BINARY, IAC, WILL, OPT_BINARY, IAC, DO, OPT_SGA, IAC, WONT, OPT_SGA,
            ],
        );
        assert!(r.reply.is_empty(), "acks need no answer: {:?}", r.reply);
        assert!(t.sending_binary() && t.receiving_binary() && t.local_enabled(OPT_SGA));
        assert!(!t.remote_enabled(OPT_SGA));
    }

    #[test]
    fn subnegotiation_is_dropped_whole() {
        let mut t = Telnet::new();
        let mut input = b"ab".to_vec();
        // IAC SB TTYPE SEND IAC SE, with an escaped 255 inside.
        input.extend_from_slice(&[IAC, SB, TTYPE, 1, IAC, IAC, 7, IAC, SE]);
        input.extend_from_slice(b"cd");
        let r = byte_by_byte(&mut t, &input);
        assert_eq!(r.data, b"abcd");
        assert!(r.reply.is_empty());
    }

    #[test]
    fn a_subnegotiation_whose_se_was_lost_ends_at_the_next_command() {
        let mut t = Telnet::new();
        let r = byte_by_byte(&mut t, &[IAC, SB, 44, 5, IAC, WILL, OPT_SGA, b'x']);
        assert_eq!(r.data, b"x");
        assert_eq!(r.reply, [IAC, DO, OPT_SGA]);
    }

    #[test]
    fn an_endless_subnegotiation_gives_the_line_back() {
        let mut t = Telnet::new();
        let mut input = vec![IAC, SB, 44];
        input.extend(std::iter::repeat_n(b'z', MAX_SUBNEGOTIATION));
        input.extend_from_slice(b"ok");
        let r = t.receive(&input);
        assert!(r.data.ends_with(b"ok"), "{}", r.data.len());
        assert!(r.data.len() < 10);
    }

    #[test]
    fn other_commands_are_stripped_mid_line() {
        let mut t = Telnet::new();
        // NOP, AYT (246), GA (249), DM (242) inside a JSON line.
        let r = byte_by_byte(
            &mut t,
            &[
                b'{', IAC, NOP, b'"', IAC, 246, b'a', IAC, 249, b'"', IAC, 242, b'}',
            ],
        );
        assert_eq!(r.data, b"{\"a\"}");
    }

    #[test]
    fn cr_nul_is_a_cr_outside_binary_only() {
        let mut t = Telnet::new();
        let r = byte_by_byte(&mut t, b"a\r\0b\r\n");
        assert_eq!(r.data, b"a\rb\r\n");
        byte_by_byte(&mut t, &[IAC, WILL, OPT_BINARY]);
        let r = byte_by_byte(&mut t, b"a\r\0b");
        assert_eq!(r.data, b"a\r\0b");
    }

    #[test]
    fn encode_doubles_iac_and_pads_a_bare_cr() {
        let mut t = Telnet::new();
        assert_eq!(t.encode(&[b'a', 255, b'b']), [b'a', 255, 255, b'b']);
        assert_eq!(t.encode(b"x\r"), b"x\r\0");
        assert_eq!(t.encode(b"x\r\n"), b"x\r\n");
        byte_by_byte(&mut t, &[IAC, DO, OPT_BINARY]);
        assert_eq!(t.encode(b"x\r"), b"x\r");
        assert_eq!(t.encode(&[255]), [255, 255]);
    }

    #[test]
    fn encoded_data_decodes_to_itself() {
        let data: Vec<u8> = (0..=255).chain([13, 0, 13, 10, 255, 255]).collect();
        for binary in [false, true] {
            let mut tx = Telnet::new();
            let mut rx = Telnet::new();
            if binary {
                tx.receive(&[IAC, DO, OPT_BINARY]);
                rx.receive(&[IAC, WILL, OPT_BINARY]);
            }
            let wire = tx.encode(&data);
            let got = byte_by_byte(&mut rx, &wire);
            assert_eq!(got.data, data, "binary {binary}");
        }
    }
}
