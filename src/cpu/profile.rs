//! Optional per-operation timing of forward passes.
//!
//! With `CHIMERA_PROFILE=1` in the environment, every named step of the
//! forward pass adds its wall time (measured on the calling thread, so a
//! parallel step counts once) to a table that is printed to stderr when
//! the process ends a generation (see [`report`]). Off, a step costs one
//! relaxed atomic load.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
static TABLE: Mutex<Vec<(&'static str, f64, u64)>> = Mutex::new(Vec::new());

pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("CHIMERA_PROFILE").is_ok_and(|v| v == "1");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Times the rest of the enclosing scope under `name`.
pub struct Scope {
    name: &'static str,
    start: Option<Instant>,
}

pub fn scope(name: &'static str) -> Scope {
    Scope {
        name,
        start: enabled().then(Instant::now),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(t) = self.start {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let mut tab = TABLE.lock().unwrap_or_else(|e| e.into_inner());
            match tab.iter_mut().find(|e| e.0 == self.name) {
                Some(e) => {
                    e.1 += ms;
                    e.2 += 1;
                }
                None => tab.push((self.name, ms, 1)),
            }
        }
    }
}

/// The table so far (name, total ms, calls), largest first, and clears it.
pub fn take() -> Vec<(&'static str, f64, u64)> {
    let mut tab = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = std::mem::take(&mut *tab);
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// Prints the table to stderr, per forward pass (the calls of the step
/// named "forward (total)").
pub fn report() {
    if !enabled() {
        return;
    }
    let v = take();
    let per = v
        .iter()
        .find(|e| e.0 == "forward (total)")
        .map_or(1.0, |e| e.2.max(1) as f64);
    let total = v
        .iter()
        .find(|e| e.0 == "forward (total)")
        .map_or(0.0, |e| e.1);
    eprintln!("profile: {per} forward passes, {:.3} ms each", total / per);
    eprintln!(
        "  {:<26} {:>9} {:>7} {:>7}",
        "step", "ms/pass", "share", "calls"
    );
    for (name, ms, calls) in v {
        eprintln!(
            "  {:<26} {:>9.4} {:>6.1}% {:>7.1}",
            name,
            ms / per,
            if total > 0.0 { 100.0 * ms / total } else { 0.0 },
            calls as f64 / per
        );
    }
}
