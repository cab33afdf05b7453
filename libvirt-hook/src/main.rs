//! rackside-hook: see the library for what it does. A panic anywhere
//! exits 0: a hook's own trouble must never fail a guest.

fn main() {
    std::process::exit(rackside_hook::run_process());
}
