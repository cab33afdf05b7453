//! Keys in, commands out.

mod common;

use common::*;
use rackside_controller_ui::{App, Command, Input, Key, Pin, Screen};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

fn evacuate(host: &str, poweroff: bool) -> Command {
    Command::Evacuate {
        host: host.into(),
        poweroff,
    }
}

#[test]
fn rack_keys_move_open_refresh_and_quit() {
    let mut app = rack();
    assert_eq!(keys(&mut app, &[Key::Char('r')]), vec![Command::Refresh]);
    keys(&mut app, &[Key::Down, Key::Enter]);
    assert_eq!(app.screen(), &Screen::Host("hb".into()));
    keys(
        &mut app,
        &[Key::Esc, Key::Down, Key::Down, Key::Down, Key::Enter],
    );
    assert_eq!(
        app.screen(),
        &Screen::Host("hc".into()),
        "the cursor stops at the last host"
    );
    keys(&mut app, &[Key::Char('q')]);
    assert_eq!(app.screen(), &Screen::Rack, "q goes back from a host");
    keys(&mut app, &[Key::Up, Key::Home, Key::Enter, Key::Esc]);
    assert_eq!(keys(&mut app, &[Key::Char('q')]), vec![Command::Quit]);
    assert_eq!(keys(&mut app, &[Key::Interrupt]), vec![Command::Quit]);
}

#[test]
fn the_cursor_stays_on_its_host_when_another_joins() {
    let mut app = rack();
    keys(&mut app, &[Key::Down]); // hb
    app.handle(Input::LineUp {
        host: "aa".into(),
        at: rackside_controller_ui::Millis(0),
    });
    keys(&mut app, &[Key::Enter]);
    assert_eq!(app.screen(), &Screen::Host("hb".into()));
}

#[test]
fn host_keys_ask_for_a_plan_and_identify() {
    let mut app = rack();
    keys(&mut app, &[Key::Enter]);
    assert_eq!(
        keys(&mut app, &[Key::Char('p')]),
        vec![Command::Plan { host: "ha".into() }]
    );
    assert_eq!(
        keys(&mut app, &[Key::Char('i')]),
        vec![Command::Identify { host: "ha".into() }]
    );
    assert!(screen(&app, 80, 24).contains("ha: identify asked for"));
}

#[test]
fn evacuate_needs_a_yes() {
    let mut app = rack();
    keys(&mut app, &[Key::Enter]);
    // e alone asks; n, Esc and other keys do not evacuate.
    assert!(keys(&mut app, &[Key::Char('e')]).is_empty());
    assert!(screen(&app, 80, 24).contains("Evacuate ha?"));
    assert!(keys(&mut app, &[Key::Char('x'), Key::Enter, Key::Char('p')]).is_empty());
    assert!(
        app.confirming().is_some(),
        "other keys leave the question open"
    );
    assert!(keys(&mut app, &[Key::Char('n')]).is_empty());
    assert!(app.confirming().is_none());
    assert!(keys(&mut app, &[Key::Char('e'), Key::Esc]).is_empty());
    assert!(app.confirming().is_none());

    assert_eq!(
        keys(&mut app, &[Key::Char('e'), Key::Char('y')]),
        vec![evacuate("ha", false)]
    );
    assert_eq!(app.screen(), &Screen::Progress("ha".into()));

    keys(&mut app, &[Key::Esc]);
    assert!(keys(&mut app, &[Key::Char('E')]).is_empty());
    assert!(screen(&app, 80, 24).contains("Evacuate ha and power it off?"));
    assert_eq!(
        keys(&mut app, &[Key::Char('Y')]),
        vec![evacuate("ha", true)]
    );
}

#[test]
fn the_question_warns_when_the_hosts_line_is_down() {
    let mut app = rack();
    keys(&mut app, &[Key::End, Key::Enter, Key::Char('e')]);
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("Evacuate hc?") && s.contains("LINE IS DOWN"),
        "{s}"
    );
}

#[test]
fn a_verdict_banner_swallows_keys_meant_for_what_it_covers() {
    let mut app = evacuating();
    keys(&mut app, &[Key::Enter, Key::Char('e')]);
    event(&mut app, "ha", VERDICT_NOT_SAFE);
    // The y lands on the banner, not on the hidden question.
    assert!(keys(&mut app, &[Key::Char('y'), Key::Char('q')]).is_empty());
    assert!(app.banner().is_some());
    keys(&mut app, &[Key::Esc]);
    assert!(app.banner().is_none());
    assert!(
        app.confirming().is_some(),
        "the question is still open, and still needs y"
    );
    assert_eq!(
        keys(&mut app, &[Key::Char('y')]),
        vec![evacuate("ha", false)]
    );
}

#[test]
fn verdicts_queue_one_per_host_and_can_be_shown_again() {
    let mut app = evacuating();
    event(&mut app, "ha", VERDICT_NOT_SAFE);
    event(
        &mut app,
        "hb",
        &VERDICT_SAFE.replace(r#""host":"ha""#, r#""host":"hb""#),
    );
    // A second verdict for ha replaces its first, unseen one.
    event(&mut app, "ha", VERDICT_SAFE);
    assert_eq!(app.banner().unwrap().host.as_deref(), Some("hb"));
    assert!(screen(&app, 80, 24).contains("1 more verdict(s) after this one"));
    keys(&mut app, &[Key::Enter]);
    let v = app.banner().unwrap();
    assert!(v.safe && v.host.as_deref() == Some("ha"));
    keys(&mut app, &[Key::Enter]);
    assert!(app.banner().is_none());
    // v on the progress screen brings it back.
    keys(&mut app, &[Key::Enter, Key::Char('g'), Key::Char('v')]);
    assert!(app.banner().is_some_and(|v| v.safe));
}

#[test]
fn the_pin_prompt_yields_a_login_and_cancels_cleanly() {
    let mut app = rack();
    app.handle(Input::PinNeeded { host: "ha".into() });
    app.handle(Input::PinNeeded { host: "hb".into() });
    app.handle(Input::PinNeeded { host: "ha".into() }); // already asked
                                                        // Enter with nothing typed sends nothing; q is a character of the PIN.
    assert!(keys(&mut app, &[Key::Enter]).is_empty());
    type_str(&mut app, "12x45");
    keys(&mut app, &[Key::Backspace, Key::Backspace]);
    type_str(&mut app, "q6");
    let cmds = keys(&mut app, &[Key::Enter]);
    assert_eq!(
        cmds,
        vec![Command::Login {
            host: "ha".into(),
            pin: Pin::new("12xq6".into())
        }]
    );
    if let Command::Login { pin, .. } = &cmds[0] {
        assert_eq!(pin.expose(), "12xq6");
    }
    // Then hb's prompt, empty; Ctrl-C cancels it without quitting.
    assert_eq!(
        app.pin_prompt().map(|p| (p.host.as_str(), p.len())),
        Some(("hb", 0))
    );
    assert!(keys(&mut app, &[Key::Interrupt]).is_empty());
    assert!(app.pin_prompt().is_none());
    assert!(screen(&app, 80, 24).contains("hb: login cancelled"));
}

#[test]
fn locate_opens_the_host_of_a_known_vm_or_asks_the_agents() {
    let mut app = rack();
    keys(&mut app, &[Key::Char('/')]);
    assert!(type_str(&mut app, "web1").is_empty());
    assert!(keys(&mut app, &[Key::Enter]).is_empty());
    assert_eq!(app.screen(), &Screen::Host("ha".into()));

    keys(&mut app, &[Key::Char('/')]);
    // q and r are letters of a name here, not quit and refresh.
    assert!(type_str(&mut app, "qr-nosuch").is_empty());
    assert_eq!(
        keys(&mut app, &[Key::Enter]),
        vec![Command::Locate {
            vm: "qr-nosuch".into()
        }]
    );
    assert!(app.locate_state().asked);
    keys(&mut app, &[Key::Esc]);
    assert_eq!(app.screen(), &Screen::Rack);
}

#[test]
fn missed_events_ask_for_a_refresh() {
    let mut app = App::new();
    let cmds = event(
        &mut app,
        "ha",
        r#"{"event":"events.missed","ts":"2026-12-01T05:00:00Z","data":{"missed":1200}}"#,
    );
    assert_eq!(cmds, vec![Command::Refresh]);
}

#[test]
fn crossterm_keys_convert() {
    let k = |code, mods| Key::from_crossterm(KeyEvent::new(code, mods));
    assert_eq!(
        k(KeyCode::Char('e'), KeyModifiers::NONE),
        Some(Key::Char('e'))
    );
    assert_eq!(
        k(KeyCode::Char('E'), KeyModifiers::SHIFT),
        Some(Key::Char('E'))
    );
    assert_eq!(
        k(KeyCode::Char('c'), KeyModifiers::CONTROL),
        Some(Key::Interrupt)
    );
    assert_eq!(k(KeyCode::Char('x'), KeyModifiers::CONTROL), None);
    assert_eq!(k(KeyCode::Enter, KeyModifiers::NONE), Some(Key::Enter));
    assert_eq!(k(KeyCode::F(5), KeyModifiers::NONE), None);
    let mut release = KeyEvent::new(KeyCode::Char('y'), KeyModifiers::NONE);
    release.kind = KeyEventKind::Release;
    assert_eq!(
        Key::from_crossterm(release),
        None,
        "a release is not a second y"
    );
}
