//! A deterministic stand-in for the agent behind the console: it answers
//! every command, with success or any error code, and puts data from
//! outside (hostile names and messages) in the JSON and in the text.

use std::sync::atomic::{AtomicU64, Ordering};

use rackside_agent::console::answer::{Answer, Backend, Refusal};
use rackside_protocol::screen::Text;
use rackside_protocol::{table, Command, ErrorCode};
use serde_json::{json, Value};

use super::gen::hostile;
use super::rng::Rng;

#[derive(Debug)]
pub struct FakeBackend {
    seed: u64,
    calls: AtomicU64,
}

impl FakeBackend {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            calls: AtomicU64::new(0),
        }
    }

    /// How many commands reached the backend.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Backend for FakeBackend {
    fn answer(&self, cmd: &Command, line: &str) -> Result<Answer, Refusal> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        // Same seed and call number, same answer: two runs of one input
        // can be compared byte for byte.
        let mut rng = Rng::for_input(self.seed, n);
        if rng.one_in(3) {
            let code = *rng.pick(&ErrorCode::ALL);
            return Err((code, hostile(&mut rng)));
        }
        let names: Vec<String> = (0..rng.below(4)).map(|_| hostile(&mut rng)).collect();
        let data = json!({
            "cmd": cmd.name(),
            "line": line,
            "args": format!("{cmd:?}"),
            "name": hostile(&mut rng),
            "names": names,
            "n": rng.next(),
            "x": rng.below(1000) as f64 / 3.0,
            "nested": {"a": [hostile(&mut rng), Value::Null, {"b": hostile(&mut rng)}]},
        });
        // Text the way the console builds it: tables, key/value blocks and
        // lines, with names from outside in them, unescaped.
        let text = match rng.below(4) {
            0 => {
                let rows: Vec<Vec<String>> = names
                    .iter()
                    .map(|name| vec![name.clone(), hostile(&mut rng), "running".into()])
                    .collect();
                table::render(&["NAME", "WHY", "STATE"], &rows)
            }
            1 => table::render_kv(&[("vm", hostile(&mut rng)), ("note", hostile(&mut rng))]),
            2 => Text::line(format!("{}: {}", hostile(&mut rng), cmd.name())),
            _ => names.iter().map(|n| n.to_string()).collect(),
        };
        Ok(Answer { data, text })
    }

    fn warnings(&self) -> Vec<String> {
        let mut rng = Rng::new(self.seed);
        (0..rng.below(3)).map(|_| hostile(&mut rng)).collect()
    }
}
