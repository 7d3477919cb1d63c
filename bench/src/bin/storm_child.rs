//! The crashing child of the `storm` benchmark: sleeps the milliseconds given as its
//! argument (default 100), then exits with code 1, as a service that dies at start-up.

use std::time::Duration;

fn main() {
    let ms = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(100);
    std::thread::sleep(Duration::from_millis(ms));
    eprintln!("storm_child: exiting with code 1 after {ms} ms, on purpose");
    std::process::exit(1);
}
