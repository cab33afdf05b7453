//! `identify HOST`: blinks the host's locator (the agent runs its
//! `[power] identify_command`). Needs a login when the agent has a PIN.

use rackside_protocol::{Command, Identify};
use serde_json::json;

use crate::client::ClientError;
use crate::cmd::Outcome;
use crate::link::{Link, Notify};
use crate::out::Out;

pub fn run(
    link: &mut Link,
    what: Identify,
    out: &mut Out,
    notify: Notify,
) -> Result<Outcome, ClientError> {
    let said = match &what {
        Identify::On => "on".to_owned(),
        Identify::Off => "off".to_owned(),
        Identify::Seconds(s) => format!("on for {s} s"),
    };
    link.call(&Command::Identify(what), notify)?;
    if out.json() {
        out.value(&json!({"host": link.host, "identify": said, "ok": true}));
    } else {
        out.say(&format!("{}: identify {said}", link.host), 2);
    }
    Ok(Outcome::Success)
}
