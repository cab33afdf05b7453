//! The console under a million generated inputs (`make fuzz`; issue 9):
//! the line reader, the parser and a session with a hostile backend, events
//! and time passing. Checked on every input: no panic; on a JSON line every
//! line out is one JSON object; on a text line every line starting with '{'
//! is one; JSON lines are ASCII (no raw C1 or bidi control); text the agent
//! writes carries no terminal control, C1 code or bidi control, and no line
//! but the agent's verdict says POWER OFF; at most one answer per request
//! line, and a prompt after it; the reader holds at most MAX_LINE bytes;
//! cutting the input differently changes nothing.
//!
//! Environment: FUZZ_INPUTS (default 1000000), FUZZ_SECONDS (a time budget,
//! default 240: the run stops at whichever comes first and says so),
//! FUZZ_SEED (hex; default fixed; `random` for a new one), FUZZ_INPUT
//! (replay one input and print it), FUZZ_THREADS (default: the cores).

mod fuzz;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use fuzz::rng::Rng;
use fuzz::run::{self, Counts, Opts};

const DEFAULT_SEED: u64 = 0x7261_636b_7369_6465; // "rackside"
const BATCH: u64 = 256;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

fn seed() -> u64 {
    match std::env::var("FUZZ_SEED").as_deref() {
        Err(_) => DEFAULT_SEED,
        Ok("random") => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Rng::new(nanos ^ u64::from(std::process::id())).next()
        }
        Ok(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("FUZZ_SEED={s:?} is not hex")),
    }
}

/// A hash of the PIN with argon2's smallest parameters: a login is then
/// checked in microseconds, not the tens of milliseconds the agent's own
/// hashes take on purpose.
fn cheap_pin_hash() -> String {
    let params = Params::new(8, 1, 1, None).expect("argon2 minimum parameters");
    let salt = SaltString::encode_b64(b"rackside-fuzz").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(fuzz::gen::PIN.as_bytes(), &salt)
        .expect("argon2 hash")
        .to_string()
}

/// Runs one input; a panic becomes a failure like any other.
fn one(opts: &Opts, index: u64) -> Result<Counts, String> {
    match panic::catch_unwind(AssertUnwindSafe(|| run::input(opts, index))) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            Err(format!("panic: {msg}"))
        }
    }
}

fn report(opts: &Opts, index: u64, why: &str) -> String {
    let mut rng = Rng::for_input(opts.seed, index);
    let script = run::script(&mut rng);
    format!(
        "input {index} (FUZZ_SEED={:#x} FUZZ_INPUT={index}): {why}\n{}",
        opts.seed,
        run::describe(&script)
    )
}

#[test]
#[ignore = "fuzz: make fuzz"]
fn fuzz_a_million_inputs() {
    let opts = Opts {
        seed: seed(),
        pin_hash: cheap_pin_hash(),
    };
    if let Some(index) = env::<u64>("FUZZ_INPUT") {
        let result = one(&opts, index);
        println!("{}", report(&opts, index, &format!("{result:?}")));
        assert!(result.is_ok());
        return;
    }
    let inputs = env::<u64>("FUZZ_INPUTS").unwrap_or(1_000_000);
    let budget = Duration::from_secs_f64(env::<f64>("FUZZ_SECONDS").unwrap_or(240.0));
    let threads = env::<usize>("FUZZ_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);

    let start = Instant::now();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let total = Mutex::new(Counts::default());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut counts = Counts::default();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < budget {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    if first >= inputs {
                        break;
                    }
                    for index in first..(first + BATCH).min(inputs) {
                        match one(&opts, index) {
                            Ok(c) => counts += c,
                            Err(why) => {
                                stop.store(true, Ordering::Relaxed);
                                failures.lock().unwrap().push(report(&opts, index, &why));
                                break;
                            }
                        }
                    }
                }
                *total.lock().unwrap() += counts;
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let total = *total.lock().unwrap();
    let failures = failures.into_inner().unwrap();
    println!(
        "fuzz: {} inputs (line reader {}, parser {}, session {}) in {seconds:.1} s, {} failures, seed {:#x}",
        total.session,
        total.reader,
        total.parser,
        total.session,
        failures.len(),
        opts.seed,
    );
    if failures.is_empty() && total.session < inputs {
        println!(
            "fuzz: the {} s budget ran out before {inputs} inputs",
            budget.as_secs_f64()
        );
    }
    for failure in &failures {
        println!("fuzz: FAILED {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s), see above",
        failures.len()
    );
}
