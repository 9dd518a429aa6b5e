//! The client-side commands of the `airbag` binary: `send`, `subscribe`,
//! `state`, `health`, `load` and `replay`, and the library pieces they are
//! built from.
//!
//! These are gRPC *clients* of the service, so unlike the engine they speak
//! protobuf (the generated types in [`crate::wire::proto`]).
//!
//! # Layout
//!
//! - [`alert_json`]: one alert as a JSON object or CSV row, the same for
//!   `subscribe` and `replay` ([`crate::alerts::json`], under its former
//!   name).
//! - [`wire`]: connecting to a server, decimals and ticks to and from their
//!   proto form.
//! - [`send`]: `airbag send`, a tick file streamed to `Ingest`.
//! - [`resume`]: `send` across disconnects and server restarts.
//! - [`subscribe`]: `airbag subscribe`, alerts as JSON lines.
//! - [`state`]: `airbag state`, what rules have in force right now.
//! - [`health`]: `airbag health`, the gRPC health check as an exit code.
//! - [`load`]: `airbag load`, the load generator and latency benchmark.
//! - [`pace`]: the token-bucket pacer `send` and `load` share.
//! - [`cpu`]: CPU time of this process and of another one.
//! - [`replay`]: `airbag replay`, recorded ticks through the engine
//!   offline (the work is in [`crate::replay`]).
//!
//! Each command exposes `XArgs` (clap arguments) and `run(XArgs)`; the
//! work itself is in library functions (`send::send_file`,
//! `subscribe::tail`, `load::run_load`) that tests call in-process.

pub use crate::alerts::json as alert_json;
pub mod cpu;
pub mod health;
pub mod load;
pub mod pace;
pub mod replay;
pub mod resume;
pub mod send;
pub mod state;
pub mod subscribe;
pub mod wire;

/// The address the commands talk to unless told otherwise: `airbag serve`'s
/// default listen address.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// An error and its causes on one line, `outer: cause: root`, for the
/// commands' stderr.
///
/// Many errors already quote their cause in their own message (`cannot
/// write alerts: {io error}`), so a cause whose text the line already holds
/// is left out rather than printed twice.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write alerts: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn a_cause_quoted_by_its_error_is_printed_once() {
        let io = std::io::Error::other("disk full");
        let error = anyhow::Error::new(Quoting(io)).context("replay stopped");
        assert_eq!(error_line(&error), "replay stopped: cannot write alerts: disk full");
    }

    #[test]
    fn a_cause_not_quoted_is_appended() {
        let error = anyhow::Error::new(std::io::Error::other("disk full")).context("cannot write alerts");
        assert_eq!(error_line(&error), "cannot write alerts: disk full");
    }
}
