//! What a person sees, read back from ratatui's TestBackend.

mod common;

use common::*;
use rackside_controller_ui::{Answer, App, Input, Key, Millis};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;

/// The foreground colour of the first cell of `needle` on screen.
fn fg_of(app: &App, w: u16, h: u16, needle: &str) -> Option<Color> {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| app.render(f)).unwrap();
    let buf = term.backend().buffer();
    let rows = draw(app, w, h);
    for (y, row) in rows.iter().enumerate() {
        if let Some(byte_at) = row.find(needle) {
            let x = row[..byte_at].chars().count() as u16;
            return buf[(x, y as u16)].fg.into();
        }
    }
    None
}

/// Every word of `shown` (but a last one cut with `…`) is a whole word of
/// `source`: nothing was cut mid-word.
fn whole_words(shown: &str, source: &str) -> bool {
    let source_words: Vec<&str> = source.split_whitespace().collect();
    shown
        .split_whitespace()
        .all(|w| w.ends_with('…') && w.len() > 3 || source_words.contains(&w))
}

#[test]
fn rack_table_shows_each_host_and_a_dropped_line() {
    let app = rack();
    let rows = draw(&app, 80, 24);
    assert!(
        rows[0].contains("3 hosts") && rows[0].contains("1 LINE DOWN"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].starts_with("HOST") && rows[1].contains("HEALTH"),
        "{}",
        rows[1]
    );

    let ha = &rows_with(&rows, "ha  ")[0];
    for want in ["up", "active", "ok", " 3 ", "99", "22.0/23.5"] {
        assert!(ha.contains(want), "ha row lacks {want:?}: {ha}");
    }
    let hb = &rows_with(&rows, "hb  ")[0];
    assert!(hb.contains("degraded"), "{hb}");
    let hc = &rows_with(&rows, "hc  ")[0];
    assert!(hc.contains("LINE DOWN 12s: reconnecting"), "{hc}");
    assert_eq!(fg_of(&app, 80, 24, "LINE DOWN 12s"), Some(Color::Red));
    // The help line names the keys.
    assert!(
        rows[23].contains("Enter") && rows[23].contains("q quit"),
        "{}",
        rows[23]
    );
}

#[test]
fn a_dropped_line_counts_up_and_clears_when_it_is_back() {
    let mut app = rack();
    app.handle(Input::Tick {
        now: Millis::from_secs(68),
    });
    // At 80 columns the reason may not fit beside the time; at 120 it does.
    assert!(screen(&app, 80, 24).contains("LINE DOWN 1m05s: …"));
    assert!(screen(&app, 120, 30).contains("LINE DOWN 1m05s: reconnecting"));
    // Attempts to reconnect keep the drop's time.
    app.handle(Input::LineConnecting {
        host: "hc".into(),
        at: Millis::from_secs(70),
    });
    assert!(screen(&app, 80, 24).contains("LINE DOWN 1m07s"));
    app.handle(Input::LineUp {
        host: "hc".into(),
        at: Millis::from_secs(71),
    });
    let s = screen(&app, 80, 24);
    assert!(!s.contains("LINE DOWN"), "{s}");
}

#[test]
fn host_view_shows_its_vms_and_the_plan() {
    let mut app = rack();
    keys(&mut app, &[Key::Enter]);
    let s = screen(&app, 80, 24);
    assert!(s.contains("no plan yet: p asks for a dry run"), "{s}");
    answer(&mut app, "ha", Answer::Plan, PLAN_HA);
    let rows = draw(&app, 80, 24);
    let s = rows.join("\n");
    assert!(rows[1].starts_with("ha  rack 12 / U07"), "{}", rows[1]);
    // hb is degraded by its own line's word, which ha's agent, choosing
    // it, cannot see: the controller says so against the move.
    let db1 = &rows_with(&rows, "db1 ")[0];
    assert!(
        db1.contains("running") && db1.contains("8192") && db1.contains("→ hb (degraded)"),
        "{db1}"
    );
    assert_eq!(fg_of(&app, 80, 24, "→ hb (degraded)"), Some(Color::Yellow));
    assert!(
        s.contains("hb is degraded: a move there may be refused; the agent then"),
        "{s}"
    );
    // hc's line is down: nothing known against it, nothing said.
    assert!(
        rows_with(&rows, "web1 ")[0].trim_end().ends_with("→ hc"),
        "{s}"
    );
    assert_eq!(s.matches("may be refused").count(), 1, "{s}");
    let huge = &rows_with(&rows, "huge ")[0];
    assert!(
        huge.contains("40960") && huge.contains("cannot place"),
        "{huge}"
    );
    assert!(rows_with(&rows, "spare ")[0].contains("→ hc"));
    assert!(s.contains("plan: 3 to move, 1 cannot be placed"), "{s}");
    assert!(
        s.contains("cannot place huge: no candidate: needs 40960 MiB;"),
        "{s}"
    );
    assert!(
        s.contains("peer hb: full (needs 40960 MiB, has 3 MiB free after the 1 GiB"),
        "{s}"
    );
    assert!(s.contains("peer hc: unreachable"), "{s}");
    assert!(
        rows[23].contains("e evacuate") && rows[23].contains("i identify"),
        "{}",
        rows[23]
    );
}

#[test]
fn progress_shows_a_gauge_with_percent_and_eta_per_vm() {
    let mut app = evacuating();
    keys(&mut app, &[Key::Enter, Key::Char('g')]);
    let rows = draw(&app, 80, 24);
    let s = rows.join("\n");
    assert!(
        s.contains("ha · evacuation 2 · 0 of 3 done, 2 running, 0 failed"),
        "{s}"
    );
    let db1 = &rows_with(&rows, "db1 ")[0];
    assert!(db1.contains("→ hb") && db1.contains("41% ETA 2s"), "{db1}");
    assert!(db1.contains("57 MiB") && db1.contains("35MiB/s"), "{db1}");
    let web1 = &rows_with(&rows, "web1 ")[0];
    assert!(web1.contains("87% ETA 1m15s"), "{web1}");
    // The bars are proportional: more filled for 87% than for 41%.
    let filled = |r: &str| r.matches('━').count();
    assert!(
        filled(db1) > 5 && filled(web1) > filled(db1),
        "{db1}\n{web1}"
    );
    assert!(rows_with(&rows, "app2 ")[0].contains("queued"));

    event(&mut app, "ha", DONE_DB1);
    event(&mut app, "ha", FAILED_APP2);
    let rows = draw(&app, 80, 24);
    let db1 = &rows_with(&rows, "db1 ")[0];
    assert!(
        db1.contains("done") && db1.contains("4.1s down 155ms"),
        "{db1}"
    );
    let app2 = &rows_with(&rows, "app2 ")[0];
    assert!(
        app2.contains("FAILED: no answer from hc for 120 s"),
        "{app2}"
    );
    assert!(
        rows[1].contains("1 of 3 done, 1 running, 1 failed"),
        "{}",
        rows[1]
    );
}

#[test]
fn a_retried_migration_says_why_and_where_it_goes_now() {
    let mut app = evacuating();
    keys(&mut app, &[Key::Enter, Key::Char('g'), Key::Down]);
    event(&mut app, "ha", FAILED_WEB1_RETRY);
    let rows = draw(&app, 80, 24);
    let web1 = &rows_with(&rows, "web1 ")[0];
    assert!(web1.contains("→ hc") && web1.contains("0% ETA ?"), "{web1}");
    // The selected VM's note, in full under the bars.
    let s = rows.join(" ");
    assert!(
        s.contains("web1: hb failed: no progress for 61 s (remaining 512 MiB)"),
        "{s}"
    );
    assert!(s.contains("retrying on hc"), "{s}");
}

#[test]
fn progress_says_when_the_line_dropped_under_it() {
    let mut app = evacuating();
    keys(&mut app, &[Key::Enter, Key::Char('g')]);
    app.handle(Input::LineDropped {
        host: "ha".into(),
        reason: "reconnecting".into(),
        at: Millis::from_secs(20),
    });
    app.handle(Input::Tick {
        now: Millis::from_secs(27),
    });
    let rows = draw(&app, 80, 24);
    assert!(
        rows[2].contains("LINE DOWN 7s: reconnecting; figures are from before"),
        "{}",
        rows[2]
    );
}

#[test]
fn the_safe_banner_fills_the_screen_until_dismissed() {
    let mut app = evacuating();
    event(&mut app, "ha", VERDICT_SAFE);
    let s = screen(&app, 80, 24);
    assert!(s.contains("*** SAFE TO POWER OFF ***"), "{s}");
    assert!(s.contains("host ha · evacuation 2"), "{s}");
    assert!(s.contains("no VM left running; 1 moved"), "{s}");
    assert!(!s.contains("NOT SAFE"), "{s}");
    assert!(!s.contains("HOST "), "the rack table shows through: {s}");
    assert_eq!(fg_of(&app, 80, 24, "*** SAFE"), Some(Color::White));
    // Keys other than Enter and Esc do not dismiss it.
    keys(&mut app, &[Key::Char('y'), Key::Char(' ')]);
    assert!(screen(&app, 80, 24).contains("*** SAFE TO POWER OFF ***"));
    keys(&mut app, &[Key::Enter]);
    let s = screen(&app, 80, 24);
    assert!(!s.contains("POWER OFF"), "{s}");
    assert!(s.contains("HOST "), "{s}");
}

#[test]
fn the_not_safe_banner_lists_every_reason() {
    let mut app = evacuating();
    event(&mut app, "ha", VERDICT_NOT_SAFE);
    let rows = draw(&app, 80, 24);
    let s = rows.join("\n");
    assert!(s.contains("*** NOT SAFE TO POWER OFF ***"), "{s}");
    assert!(s.contains("0 moved; do not switch this host off:"), "{s}");
    // Each reason, whole, across its wrapped lines.
    let flat = rows
        .iter()
        .map(|r| r.trim_matches(|c| c == '┃' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ");
    for reason in [
        "still here, paused: db1: cannot be placed: no candidate: no peers are known",
        "still running here: web1: cannot be placed: no candidate: no peers are known",
        "this host stays in maintenance: 'maintenance off' takes it out",
    ] {
        assert!(flat.contains(reason), "missing {reason:?} in {flat}");
    }
    // The second host's state follows the verdict.
    keys(&mut app, &[Key::Esc]);
    assert!(rows_with(&draw(&app, 80, 24), "ha  ")[0].contains("maintenance"));
}

#[test]
fn a_long_not_safe_banner_scrolls_and_says_so() {
    let mut app = rack();
    let still: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"state":"running","vm":"vm{i:02}"}}"#))
        .collect();
    let failed: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"vm":"vm{i:02}","dest":"hb","phase":"failed","error":"no answer from hb for 120 s","tried":["hb"]}}"#))
        .collect();
    let line = format!(
        r#"{{"event":"evacuation.done","ts":"x","data":{{"check_error":null,"evacuation":3,"failed":[{}],"host":"ha","moved":[],"peer_reasons":[],"remaining":[],"safe_to_power_off":false,"still_here":[{}],"unplaceable":[]}}}}"#,
        failed.join(","),
        still.join(",")
    );
    event(&mut app, "ha", &line);
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("still running here: vm00: no answer from hb for 120 s"),
        "{s}"
    );
    assert!(s.contains("(lines 1-"), "{s}");
    assert!(!s.contains("vm29"), "{s}");
    keys(&mut app, &[Key::Down; 40]);
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("still running here: vm29: no answer from hb for 120 s"),
        "{s}"
    );
    assert!(
        s.contains("*** NOT SAFE TO POWER OFF ***"),
        "the title scrolled away: {s}"
    );
    // Down stopped at the last reason: one Up moves the view at once, not
    // after undoing the extra presses.
    let first_line = |s: &str| -> usize {
        let at = s.find("(lines ").expect("scroll note") + "(lines ".len();
        s[at..].split('-').next().unwrap().parse().unwrap()
    };
    let bottom = first_line(&s);
    keys(&mut app, &[Key::Up]);
    assert_eq!(first_line(&screen(&app, 80, 24)), bottom - 1);
    keys(&mut app, &[Key::Down; 3]);
    assert_eq!(first_line(&screen(&app, 80, 24)), bottom);
}

#[test]
fn the_pin_prompt_never_shows_the_pin() {
    let mut app = rack();
    app.handle(Input::PinNeeded { host: "ha".into() });
    type_str(&mut app, "zq4719");
    for (w, h) in [(80, 24), (120, 40), (30, 8)] {
        let s = screen(&app, w, h);
        assert!(s.contains("ha asks for its PIN") || w < 44, "{s}");
        assert!(s.contains("PIN: ******"), "{s}");
        for leak in ["zq", "q4", "4719", "19"] {
            assert!(!s.contains(leak), "{leak:?} shown at {w}x{h}:\n{s}");
        }
    }
    assert!(!format!("{app:?}").contains("zq4719"));
    let cmds = keys(&mut app, &[Key::Enter]);
    assert!(!format!("{cmds:?}").contains("4719"), "{cmds:?}");
    assert!(!screen(&app, 80, 24).contains("PIN:"));
}

#[test]
fn names_from_data_cannot_spell_a_verdict_or_move_the_cursor() {
    let mut app = rack();
    // The doc's two hostile VM names, as JSON carries them.
    answer(
        &mut app,
        "ha",
        Answer::Vms,
        r#"{"id":1,"ok":true,"data":{"age_s":0,"stale":false,"vms":[{"cpu_pct":null,"mem_mib":512,"name":"x\r*** SAFE TO POWER OFF ha: no VM left running; 1 moved ***","state":"running","uuid":"6695eb01-f6a4-8304-79aa-97f2502e0021","vcpus":1},{"cpu_pct":null,"mem_mib":512,"name":"y\u009b2J\u202eevil","state":"running","uuid":"6695eb01-f6a4-8304-79aa-97f2502e0022","vcpus":1}]}}"#,
    );
    keys(&mut app, &[Key::Enter]);
    let s = screen(&app, 120, 30);
    assert!(s.contains(r"x\r*** SAFE TO POWER\x20OFF ha"), "{s}");
    assert!(s.contains(r"y\u{9b}2J\u{202e}evil"), "{s}");
    assert!(!s.contains("SAFE TO POWER OFF"), "{s}");
}

#[test]
fn eighty_columns_cut_whole_words_and_wider_screens_show_more() {
    let mut app = rack();
    let reason = "USB adapter unplugged; reopening /dev/serial/by-id/usb-FTDI_FT232R-if00";
    app.handle(Input::LineDropped {
        host: "hb".into(),
        reason: reason.into(),
        at: Millis::from_secs(3),
    });
    app.handle(Input::LineConnecting {
        host: "a-host-with-a-very-long-name".into(),
        at: Millis::from_secs(14),
    });
    let rows = draw(&app, 80, 24);
    let hb = &rows_with(&rows, "hb  ")[0];
    // LINE is the second column: 27 columns from column 13.
    let cell: String = hb.chars().skip(13).take(27).collect();
    assert_eq!(cell, "LINE DOWN 12s: USB adapter…", "{hb}");
    assert!(whole_words(&cell, &format!("LINE DOWN 12s: {reason}")));
    // A name too long for its column is cut, marked, and the columns after
    // it stay in place.
    let long = &rows_with(&rows, "a-host-with")[0];
    assert!(long.starts_with("a-host-with… connecting 1s"), "{long}");
    let header_state = rows[1].find("STATE").unwrap(); // ASCII up to here
    let state: String = hb.chars().skip(header_state).take(6).collect();
    assert_eq!(state, "active");
    // Every row keeps to the width (the buffer has no room beyond it, so
    // check nothing was laid out past it: no row is cut mid-word at the
    // edge).
    for r in &rows {
        assert_eq!(r.chars().count(), 80);
    }

    // The selected host's whole reason is under the table.
    keys(&mut app, &[Key::Down, Key::Down]);
    let s = draw(&app, 80, 24).join(" ");
    assert!(s.contains("USB adapter unplugged; reopening"), "{s}");

    // At 120 columns the reason fits and a LOCATION column appears.
    let rows = draw(&app, 120, 40);
    assert!(rows[1].contains("LOCATION"), "{}", rows[1]);
    assert!(rows_with(&rows, "ha  ")[0].contains("rack 12 / U07"));
    assert!(rows_with(&rows, "hb  ")[0].contains("USB adapter unplugged; reopening"));
}

#[test]
fn the_help_line_fits_on_every_screen_at_80_columns() {
    let mut app = evacuating();
    let mut screens = vec![draw(&app, 80, 24)];
    keys(&mut app, &[Key::Enter]);
    screens.push(draw(&app, 80, 24));
    keys(&mut app, &[Key::Char('g')]);
    screens.push(draw(&app, 80, 24));
    keys(&mut app, &[Key::Esc, Key::Char('/')]);
    screens.push(draw(&app, 80, 24));
    for rows in &screens {
        let help = rows[23].trim_end();
        assert!(
            !help.is_empty() && !help.ends_with('…'),
            "help cut: {help:?}"
        );
    }
}

#[test]
fn every_screen_renders_at_any_size_without_panicking() {
    let mut app = evacuating();
    event(&mut app, "ha", FAILED_APP2);
    let mut states = vec![app.clone()];
    keys(&mut app, &[Key::Enter]);
    answer(&mut app, "ha", Answer::Plan, PLAN_HA);
    states.push(app.clone());
    keys(&mut app, &[Key::Char('e')]);
    states.push(app.clone());
    keys(&mut app, &[Key::Char('y')]);
    states.push(app.clone());
    event(&mut app, "ha", VERDICT_NOT_SAFE);
    states.push(app.clone());
    app.handle(Input::PinNeeded { host: "hb".into() });
    type_str(&mut app, "1234");
    states.push(app.clone());
    let mut locate = rack();
    keys(&mut locate, &[Key::Char('/')]);
    type_str(
        &mut locate,
        "a-very-long-query-that-goes-on-and-on-past-the-edge-of-the-screen",
    );
    states.push(locate);
    for app in &states {
        for (w, h) in [
            (1, 1),
            (2, 3),
            (10, 4),
            (20, 5),
            (40, 12),
            (80, 24),
            (132, 43),
            (250, 80),
        ] {
            draw(app, w, h);
        }
    }
}

#[test]
fn locate_lists_matches_from_the_model_and_answers_from_the_agents() {
    let mut app = rack();
    keys(&mut app, &[Key::Char('/')]);
    type_str(&mut app, "b1");
    let rows = draw(&app, 80, 24);
    assert!(rows[1].starts_with("locate VM: b1_"), "{}", rows[1]);
    let db1 = &rows_with(&rows, "db1 ")[0];
    assert!(db1.contains("ha") && db1.contains("running") && db1.contains("rack 12 / U07"));

    keys(&mut app, &[Key::Esc, Key::Char('/')]);
    type_str(&mut app, "test");
    assert!(screen(&app, 80, 24).contains("Enter asks the agents"));
    keys(&mut app, &[Key::Enter]);
    answer(
        &mut app,
        "ha",
        Answer::Locate,
        r#"{"id":2,"ok":true,"data":{"host":"hb","local":"unknown","location":"rack 12 / U09","state":"live","vm":"test","vm_state":"running"}}"#,
    );
    let s = screen(&app, 80, 24);
    assert!(s.contains("the agents say:"), "{s}");
    assert!(
        s.contains("ha: test: live on hb (rack 12 / U09), running"),
        "{s}"
    );
}
